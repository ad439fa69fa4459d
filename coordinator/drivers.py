"""Drivers for the transaction modes: a forward phase, one decision, then its completion.

Every mode shares the same skeleton (and the same log and recovery):

    forward phase  -> decide (conditional on still `preparing`) -> complete the decision

- 2pc:  prepare every branch in parallel; commit or roll back every branch. Presumed
  abort: only the commit decision is written synchronously.
- tcc:  Try every branch in parallel; Confirm or Cancel every branch (the barrier turns a
  Cancel without its Try into a no-op and blocks a late Try).
- saga: run the actions one by one in the declared order, stopping at the first failure;
  on abort, compensate every branch in reverse order (null compensations are no-ops).
- 3pc:  CanCommit every branch in parallel; all yes: PreCommit every branch (the decision
  is taken from `precommitting` once every PreCommit is acked or one is not); DoCommit or
  Abort every branch. Off unless PAXMART_3PC_MODE (paxkit/threepc.py says why).

The events of a phase go into the log with the move that follows it (the decision, its
completion), so the timeline keeps every call a crashed driver made before its last move.
Completion that can't finish now is postponed; recovery retries it with backoff. A driver
talks to the log and the branches through their interfaces (coordinator/ports.py) only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from coordinator.ports import BranchClient, BranchResult, Event, TransactionLog, Txn
from coordinator.states import (
    ABORTED,
    COMMITTED,
    COMMITTING,
    FINAL,
    PRECOMMITTING,
    PREPARING,
    decision_of,
    overall_reason,
)
from paxkit.faults import Faults
from paxkit.metrics import BRANCH_CALLS, TRANSACTIONS
from paxkit.threepc import SPLIT_STATES
from paxkit.tracing import in_current_context

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    gtid: str
    status: str
    reason: str | None

    def as_json(self) -> dict[str, Any]:
        return {"gtid": self.gtid, "status": self.status, "reason": self.reason}


def _event(result: BranchResult) -> Event:
    outcome = "ok" if result.ok else (result.reason or "failed")
    BRANCH_CALLS.labels(result.branch, result.op, outcome).inc()
    return Event(result.branch, result.op, outcome, result.detail, result.at)


class Driver:
    """The shared skeleton; subclasses say how to go forward and how to complete."""

    mode = ""
    # The participants' endpoints its branch calls use: the mode's own unless it reuses
    # another mode's (paxos prepares and completes 2PC branches).
    branch_protocol = ""
    durable_begin = True

    def __init__(
        self,
        txn_log: TransactionLog,
        branches: BranchClient,
        faults: Faults,
        pool: Executor,
        txn_timeout_s: float,
        retry_delay_s: float,
    ) -> None:
        self.log = txn_log
        self.branches = branches
        self.faults = faults
        self.pool = pool
        self.txn_timeout_s = txn_timeout_s
        self.retry_delay_s = retry_delay_s

    def forward(self, txn: Txn) -> list[BranchResult]:
        raise NotImplementedError

    def complete(self, txn: Txn, decision: str) -> list[BranchResult]:
        raise NotImplementedError

    def run(self, txn: Txn) -> Outcome:
        """Drive a transaction just begun (status preparing) to its outcome."""
        results = self.forward(txn)
        events = [_event(r) for r in results]
        failed = [r for r in results if not r.ok]
        reason = overall_reason([r.reason or "aborted" for r in failed])
        if reason is None and len(results) < len(txn.branches):
            reason = "aborted"
        self.faults.hit("before_decision")
        decided = self.conclude(txn, reason, events)
        if decided.status == COMMITTING:
            self.faults.hit("after_decision")
        return self.finish(decided)

    def conclude(self, txn: Txn, reason: str | None, events: Sequence[Event]) -> Txn:
        """The decision after the forward phase: commit when every branch said yes (no
        reason), else abort; `events` are the forward phase's."""
        return self.decide(txn, "commit" if reason is None else "abort", reason, events=events)

    def decide(
        self,
        txn: Txn,
        event: str,
        reason: str | None,
        lease_s: float | None = None,
        events: Sequence[Event] = (),
    ) -> Txn:
        """Take the decision unless someone took one first (recovery, after the lease ran
        out): the transaction as the log now has it. One missing from the log (its relaxed
        begin was lost in a crash) is presumed aborted. `events` are logged either way."""
        lease = self.txn_timeout_s if lease_s is None else lease_s
        status = self.log.move(
            txn.gtid, txn.status, event, reason=reason, lease_s=lease, events=events
        )
        if status is not None:
            return txn.at(status, reason)
        logged = self.log.resolve(txn.gtid, txn.mode)
        assert logged is not None, "a synchronous mode's transaction is presumed, never None"
        return txn.at(logged.status, logged.reason)  # the branches this driver called

    def resolve(self, gtid: str) -> Txn | None:
        """The initiator's check-back: the logged transaction, presumed aborted if unknown."""
        return self.log.resolve(gtid, self.mode)

    def adopt(self, gtids: Sequence[str]) -> dict[str, str]:
        """Of gtids the log does not hold, those this mode knows of elsewhere, given back to
        the log: their status (none here; paxos: its acceptors' instances)."""
        return {}

    def recover(self, txn: Txn, lease_s: float, retry_delay_s: float) -> str:
        """Take over a transaction whose driver died or stalled: a forward phase that never
        decided is aborted (presumed abort); a decided one is carried out."""
        if txn.status == PREPARING:
            txn = self.decide(txn, "abort", txn.reason or "timeout", lease_s)
        self.finish(txn, retry_delay_s=retry_delay_s)
        return decision_of(txn.status)

    def finish(self, txn: Txn, retry_delay_s: float | None = None) -> Outcome:
        """Carry out a decided transaction; postponed to recovery if a branch can't finish.
        One still undecided (mode paxos, too few acceptors answering) stays preparing."""
        if txn.status == PREPARING:
            return Outcome(txn.gtid, PREPARING, None)
        decision = decision_of(txn.status)
        results = self.complete(txn, decision)
        events = [_event(r) for r in results]
        final = COMMITTED if decision == "commit" else ABORTED
        if not all(r.ok for r in results):
            log.warning(
                "%s of %s incomplete; recovery will retry",
                decision,
                txn.gtid,
                extra={"gtid": txn.gtid},
            )
            self.log.postpone(txn.gtid, retry_delay_s or self.retry_delay_s, events)
        elif txn.status in FINAL:
            self.log.record(txn.gtid, events)
        elif self.log.move(txn.gtid, txn.status, "done", events=events) is not None:
            TRANSACTIONS.labels(txn.mode, final).inc()
        return Outcome(txn.gtid, final, txn.reason if final == ABORTED else None)

    def _parallel(self, op: str, txn: Txn, reason: str | None = None) -> list[BranchResult]:
        protocol = self.branch_protocol or self.mode
        call = in_current_context(
            lambda b: self.branches.call(protocol, op, b.name, txn.gtid, b.payload, reason)
        )
        return list(self.pool.map(call, txn.branches))


class TwoPhaseCommit(Driver):
    mode = "2pc"
    durable_begin = False  # presumed abort: a lost begin is an abort

    def forward(self, txn: Txn) -> list[BranchResult]:
        return self._parallel("prepare", txn)

    def complete(self, txn: Txn, decision: str) -> list[BranchResult]:
        op = "commit" if decision == "commit" else "rollback"
        return self._parallel(op, txn, txn.reason)


class Tcc(Driver):
    mode = "tcc"

    def forward(self, txn: Txn) -> list[BranchResult]:
        return self._parallel("try", txn)

    def complete(self, txn: Txn, decision: str) -> list[BranchResult]:
        return self._parallel("confirm" if decision == "commit" else "cancel", txn)


class Saga(Driver):
    mode = "saga"

    def forward(self, txn: Txn) -> list[BranchResult]:
        results = []
        for branch in txn.branches:
            result = self.branches.call("saga", "action", branch.name, txn.gtid, branch.payload)
            results.append(result)
            if not result.ok:
                break
        return results

    def complete(self, txn: Txn, decision: str) -> list[BranchResult]:
        """Nothing to do after success; on abort, compensate in reverse, stopping at a failure
        (a later compensation must not run before an earlier one has)."""
        if decision == "commit":
            return []
        results = []
        for branch in reversed(txn.branches):
            result = self.branches.call("saga", "compensate", branch.name, txn.gtid, branch.payload)
            results.append(result)
            if not result.ok:
                break
        return results


class ThreePhaseCommit(Driver):
    """Three-phase commit (Skeen): CanCommit, PreCommit, DoCommit. The begin is durable (the
    default): its branches decide on their own when the coordinator goes quiet, so the log
    must know every transaction whose branches it touched.

    Any no or missing vote at CanCommit aborts; all yes moves the log to `precommitting` (a
    durable write: from here a precommitted branch commits on its own) and PreCommits every
    branch; every ack commits, any ack missing aborts. That last rule is the textbook's, and
    what a partition turns into a split: a branch cut off after its PreCommit hears no Abort
    and commits by its timeout while the others abort (paxkit/threepc.py)."""

    mode = "3pc"

    def forward(self, txn: Txn) -> list[BranchResult]:
        return self._parallel("cancommit", txn)

    def conclude(self, txn: Txn, reason: str | None, events: Sequence[Event]) -> Txn:
        """Every CanCommit yes: PreCommit first, and decide from its acks; else abort."""
        if reason is not None:
            return super().conclude(txn, reason, events)
        txn = self.decide(txn, "precommit", None, events=events)
        return self._precommit(txn, None) if txn.status == PRECOMMITTING else txn

    def _precommit(self, txn: Txn, lease_s: float | None) -> Txn:
        """PreCommit every branch (again, each is idempotent), then decide: commit once all
        acked, else abort with the reason of the ones that did not."""
        self.faults.hit("before_precommit")
        results = self._parallel("precommit", txn)
        reason = overall_reason([r.reason or "aborted" for r in results if not r.ok])
        self.faults.hit("after_precommit")
        event = "commit" if reason is None else "abort"
        return self.decide(txn, event, reason, lease_s, [_event(r) for r in results])

    def recover(self, txn: Txn, lease_s: float, retry_delay_s: float) -> str:
        """`preparing` past its lease is aborted, as in every mode: no branch precommitted,
        and the uncertain ones abort by their own timeout anyway. `precommitting` past its
        lease resumes the PreCommit phase and decides as the driver would: commit when every
        branch acks (they all can still commit, and the precommitted ones would commit on
        their own anyway), abort when one can't (it aborted by its timeout, or refuses): then
        the Abort has to reach the precommitted ones before their own timeout commits them,
        which is why PAXMART_3PC_PRECOMMIT_TIMEOUT_S must exceed the lease."""
        if txn.status == PRECOMMITTING:
            txn = self._precommit(txn, lease_s)
        return super().recover(txn, lease_s, retry_delay_s)

    def complete(self, txn: Txn, decision: str) -> list[BranchResult]:
        results = self._parallel("docommit" if decision == "commit" else "abort", txn)
        for split in (r for r in results if r.op == "abort" and r.detail in SPLIT_STATES):
            log.error(
                "3pc split: %s of %s %s on its own while the transaction aborted",
                split.branch,
                txn.gtid,
                split.detail,
                extra={"gtid": txn.gtid, "branch": split.branch},
            )
        return results


DRIVERS: tuple[type[Driver], ...] = (TwoPhaseCommit, Tcc, Saga, ThreePhaseCommit)
