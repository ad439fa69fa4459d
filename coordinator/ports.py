"""What the drivers, the msg flow and recovery need from the world: a transaction log and
the participants' branches. The SQL log (coordinator/log.py) and the HTTP branch client
(coordinator/branches.py) are one implementation each; unit tests use in-memory fakes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from paxkit.messaging import BranchReport


@dataclass(frozen=True)
class Branch:
    """One participant of a global transaction and its part of the work."""

    name: str
    payload: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "payload": self.payload}


@dataclass(frozen=True)
class Txn:
    """A global transaction as the log holds it."""

    gtid: str
    mode: str
    status: str
    reason: str | None = None
    branches: tuple[Branch, ...] = ()
    recovery_attempts: int = 0
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def names(self) -> frozenset[str]:
        return frozenset(b.name for b in self.branches)

    def at(self, status: str, reason: str | None = None) -> Txn:
        """This transaction in `status`; the reason is kept unless a new one is given."""
        return replace(self, status=status, reason=self.reason if reason is None else reason)


@dataclass(frozen=True)
class TxnFilter:
    """Which transactions an operator lists: by status, mode and age (seconds since begun)."""

    status: str | None = None
    mode: str | None = None
    min_age_s: float | None = None
    max_age_s: float | None = None


@dataclass(frozen=True)
class Event:
    """One entry of a transaction's timeline: a branch call and its outcome."""

    branch: str
    op: str
    outcome: str
    detail: str | None = None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True)
class BranchResult:
    """One branch call: ok (a yes vote, or phase 2 done), else the reason."""

    branch: str
    op: str
    ok: bool
    reason: str | None = None
    detail: str | None = None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


class TransactionLog(Protocol):
    """The durable log of global transactions. Every status change is `move`: a guarded
    transition (it happens only while the transaction is still in `from_status`), its
    target computed from the transition table (coordinator/states.py)."""

    def begin(
        self,
        gtid: str,
        mode: str,
        branches: Sequence[Branch],
        lease_s: float,
        durable: bool,
        status: str = "preparing",
    ) -> Txn | None:
        """Record a transaction (preparing, or submitted: a msg begin); None if the gtid
        was already taken."""

    def get(self, gtid: str) -> Txn | None: ...

    def resolve(self, gtid: str, mode: str) -> Txn | None:
        """The transaction; one the log never heard of is recorded presumed-aborted first
        (None for msg, whose begin may still be on its way)."""

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
        """Apply `event` if the transaction is still in `from_status`: the new status, or
        None when it was not (someone else moved it first). `events` are recorded either
        way; the reason is kept unless one is given; the lease too unless `lease_s`.
        `relaxed`: no wait for the fsync even of a commit decision (paxos: the acceptors
        hold it)."""

    def postpone(self, gtid: str, delay_s: float, events: Sequence[Event] = ()) -> None:
        """Not finished: recovery takes the transaction up again after `delay_s`."""

    def record(self, gtid: str, events: Sequence[Event]) -> None: ...

    def claim_expired(self, limit: int, lease_s: float) -> list[Txn]:
        """Unfinished transactions whose lease ran out, leased to this caller."""

    def statuses(self, gtids: Sequence[str]) -> dict[str, str]: ...

    # The msg mode: participants' reports, and the messages the coordinator sends.

    def add_report(self, report: BranchReport) -> bool:
        """Record a branch's report (and its timeline event); False if it was known."""

    def reports(self, gtid: str) -> list[BranchReport]: ...

    def hold(self, gtid: str) -> None:
        """Serialise the units of work of one transaction's begin and reports: without it,
        a report committed while its begin was in flight is seen by neither of them."""

    def lock(self, gtid: str) -> Txn | None:
        """The transaction, held against concurrent reports until the unit of work ends."""

    def publish(self, routing_key: str, payload: dict[str, Any]) -> None:
        """Send a message, atomically with the unit of work's other writes (the outbox)."""


class BranchClient(Protocol):
    """The participants' protocol endpoints; outcomes, never exceptions, for branch calls."""

    names: tuple[str, ...]  # the participants

    def known(self, name: str) -> bool: ...

    def call(
        self,
        mode: str,
        op: str,
        name: str,
        gtid: str,
        payload: dict[str, Any],
        reason: str | None = None,
    ) -> BranchResult: ...

    def prepared(self, name: str) -> list[dict[str, Any]]:
        """A participant's prepared 2PC branches ({gtid, age_s}); raises ApiError."""
