"""In-memory stand-ins for the coordinator's log, the participants' branches and the Paxos
acceptors: the same interfaces as coordinator/log.py's TxnLog, coordinator/branches.py's
Branches (coordinator/ports.py) and paxkit/acceptors.py's SqlAcceptor, with a clock the
test moves and branches scripted per call."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from coordinator.ports import Branch, BranchResult, Event, Txn
from coordinator.states import PREPARING, PRESUMED, UNFINISHED, is_durable, next_status
from paxkit import paxos
from paxkit.acceptors import PhaseOne
from paxkit.messaging import BranchReport
from paxkit.paxos import Accept, Accepted, AcceptorState, Nack, Prepare, Promise


@dataclass(frozen=True)
class Sent:
    routing_key: str
    payload: dict[str, Any]


class FakeTxnLog:
    """The transaction log in a dict. `now` is the clock leases are measured against."""

    def __init__(self) -> None:
        self.now = 0.0
        self.txns: dict[str, Txn] = {}
        self.leases: dict[str, float] = {}
        self.timeline: dict[str, list[Event]] = defaultdict(list)
        self.report_rows: dict[tuple[str, str, str], BranchReport] = {}
        self.sent: list[Sent] = []
        self.durable: list[tuple[str, str]] = []  # (gtid, status) written with fsync
        self.lost_begins = False  # begins vanish, as a relaxed write in a crash
        self.held: list[str] = []  # gtids whose lock a unit of work took (hold)

    def begin(
        self,
        gtid: str,
        mode: str,
        branches: Sequence[Branch],
        lease_s: float,
        durable: bool,
        status: str = PREPARING,
    ) -> Txn | None:
        if gtid in self.txns:
            return None
        txn = Txn(gtid, mode, status, branches=tuple(branches))
        if not self.lost_begins:
            self.txns[gtid] = txn
            self.leases[gtid] = self.now + lease_s
        return txn

    def get(self, gtid: str) -> Txn | None:
        return self.txns.get(gtid)

    def resolve(self, gtid: str, mode: str) -> Txn | None:
        if mode == "msg":
            return self.txns.get(gtid)
        if gtid not in self.txns:
            self.txns[gtid] = Txn(gtid, mode, PRESUMED, "timeout")
            self.leases[gtid] = self.now
        return self.txns[gtid]

    def move(
        self,
        gtid: str,
        from_status: str,
        event: str,
        *,
        reason: str | None = None,
        lease_s: float | None = None,
        events: Sequence[Event] = (),
        relaxed: bool = False,
    ) -> str | None:
        to_status = next_status(from_status, event)
        self.timeline[gtid].extend(events)
        txn = self.txns.get(gtid)
        if txn is None or txn.status != from_status:
            return None
        self.txns[gtid] = txn.at(to_status, reason)
        if lease_s is not None:
            self.leases[gtid] = self.now + lease_s
        if is_durable(to_status) and not relaxed:
            self.durable.append((gtid, to_status))
        return to_status

    def postpone(self, gtid: str, delay_s: float, events: Sequence[Event] = ()) -> None:
        self.leases[gtid] = self.now + delay_s
        self.timeline[gtid].extend(events)

    def record(self, gtid: str, events: Sequence[Event]) -> None:
        self.timeline[gtid].extend(events)

    def claim_expired(self, limit: int, lease_s: float) -> list[Txn]:
        expired = [
            t
            for t in self.txns.values()
            if t.status in UNFINISHED and self.leases[t.gtid] < self.now
        ]
        claimed = []
        for txn in sorted(expired, key=lambda t: self.leases[t.gtid])[:limit]:
            txn = replace(txn, recovery_attempts=txn.recovery_attempts + 1)
            self.txns[txn.gtid] = txn
            self.leases[txn.gtid] = self.now + lease_s
            claimed.append(txn)
        return claimed

    def statuses(self, gtids: Sequence[str]) -> dict[str, str]:
        return {g: self.txns[g].status for g in gtids if g in self.txns}

    def add_report(self, report: BranchReport) -> bool:
        key = (report.gtid, report.branch, report.op)
        outcome = "ok" if report.ok else report.reason or "failed"
        self.timeline[report.gtid].append(Event(report.branch, report.op, outcome, report.effect))
        if key in self.report_rows:
            return False
        self.report_rows[key] = replace(report, effect=None)
        return True

    def reports(self, gtid: str) -> list[BranchReport]:
        return [r for (g, _, _), r in self.report_rows.items() if g == gtid]

    def hold(self, gtid: str) -> None:
        self.held.append(gtid)

    def lock(self, gtid: str) -> Txn | None:
        return self.get(gtid)

    def publish(self, routing_key: str, payload: dict[str, Any]) -> None:
        self.sent.append(Sent(routing_key, payload))

    # For the tests.

    def status(self, gtid: str) -> str:
        return self.txns[gtid].status

    def lease_left(self, gtid: str) -> float:
        return self.leases[gtid] - self.now

    def sent_keys(self) -> list[str]:
        return [s.routing_key for s in self.sent]


Answer = BranchResult | Callable[[str, str, str], BranchResult]  # or (op, name, gtid) -> result


def ok(name: str = "", op: str = "") -> BranchResult:
    return BranchResult(name, op, True)


def no(reason: str) -> BranchResult:
    """A no vote or a refusal, with the reason."""
    return BranchResult("", "", False, reason)


def unavailable() -> BranchResult:
    """No answer (a timeout or a refused connection)."""
    return BranchResult("", "", False, "unavailable", "connection refused")


class FakeBranches:
    """Every branch answers ok unless a test scripted its next answers for (op, name)."""

    def __init__(self, names: Sequence[str] = ("inventory", "coupon", "redpacket")):
        self.names = tuple(names)
        self.script: dict[tuple[str, str], list[Answer]] = defaultdict(list)
        self.calls: list[tuple[str, str, str]] = []  # (op, name, gtid)
        self.reasons: list[str | None] = []
        self.prepared_by_name: dict[str, list[dict[str, Any]]] = {}

    def answer(self, op: str, name: str, *answers: Answer) -> FakeBranches:
        self.script[(op, name)].extend(answers)
        return self

    def known(self, name: str) -> bool:
        return name in self.names

    def call(
        self,
        mode: str,
        op: str,
        name: str,
        gtid: str,
        payload: dict[str, Any],
        reason: str | None = None,
    ) -> BranchResult:
        self.calls.append((op, name, gtid))
        self.reasons.append(reason)
        queue = self.script[(op, name)]
        answer = queue.pop(0) if queue else ok()
        result = answer(op, name, gtid) if callable(answer) else answer
        return replace(result, branch=name, op=op)

    def prepared(self, name: str) -> list[dict[str, Any]]:
        return self.prepared_by_name.get(name, [])

    def ops(self, gtid: str | None = None) -> list[tuple[str, str]]:
        return [(op, name) for op, name, g in self.calls if gtid is None or g == gtid]


class AcceptorDown(Exception):
    """The fake acceptor is down: it answers nothing."""


class FakeAcceptor:
    """An acceptor in memory (paxkit/acceptors.py's Acceptor): the same pure transitions,
    each state kept as its record (a row), a switch to take it down, and the age of each
    instance on `clock`."""

    def __init__(self, name: str, clock: Callable[[], float] = lambda: 0.0) -> None:
        self.name = name
        self.clock = clock
        self.down = False
        self.rows: dict[str, dict[str, Any]] = {}
        self.members: dict[str, tuple[str, ...]] = {}
        self.created: dict[str, float] = {}
        self.decided: dict[str, str] = {}
        self.lock = threading.Lock()

    def register(self, instance: str, members: Sequence[str]) -> None:
        with self._up():
            self._row(instance)
            if not self.members.get(instance):
                self.members[instance] = tuple(members)

    def prepare(self, instance: str, message: Prepare) -> PhaseOne:
        with self._up():
            state = AcceptorState.from_record(self._row(instance))
            state, (reply,) = paxos.receive_prepare(state, self.name, message)
            self.rows[instance] = state.to_record()
            assert isinstance(reply, Promise | Nack)
            return PhaseOne(reply, self.members.get(instance, ()))

    def accept(self, instance: str, message: Accept[str]) -> Accepted[str] | Nack:
        with self._up():
            state = AcceptorState.from_record(self._row(instance))
            state, (reply,) = paxos.receive_accept(state, self.name, message)
            self.rows[instance] = state.to_record()
            assert isinstance(reply, Accepted | Nack)
            return reply

    def known(self, instances: Sequence[str]) -> set[str]:
        with self._up():
            return {i for i in instances if i in self.rows}

    def undecided(self, older_than_s: float, limit: int) -> dict[str, tuple[str, ...]]:
        with self._up():
            old = [i for i in self.rows if i not in self.decided]
            old = [i for i in old if self.created[i] < self.clock() - older_than_s][:limit]
            return {i: self.members.get(i, ()) for i in old}

    def mark_decided(self, decided: Mapping[str, str]) -> None:
        with self._up():
            for instance, value in decided.items():
                if instance in self.rows:
                    self.decided.setdefault(instance, value)

    def accepted(self, instance: str) -> tuple[int, str, str] | None:
        """(round, proposer, value) this acceptor accepted last, if any."""
        row = self.rows.get(instance)
        if row is None or row["accepted_round"] is None:
            return None
        return (row["accepted_round"], row["accepted_by"], row["accepted_value"])

    def _row(self, instance: str) -> dict[str, Any]:
        if instance not in self.rows:
            self.rows[instance] = AcceptorState[str]().to_record()
            self.created[instance] = self.clock()
        return self.rows[instance]

    @contextmanager
    def _up(self) -> Iterator[None]:
        with self.lock:
            if self.down:
                raise AcceptorDown(self.name)
            yield
