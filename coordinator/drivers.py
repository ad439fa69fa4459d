"""Drivers for the transaction modes: a forward phase, one decision, then its completion.

Every mode shares the same skeleton (and the same log and recovery):

    forward phase  -> decide (conditional on still `preparing`) -> complete the decision

- 2pc:  prepare every branch in parallel; commit or roll back every branch. Presumed
  abort: only the commit decision is written synchronously.
- tcc:  Try every branch in parallel; Confirm or Cancel every branch (the barrier turns a
  Cancel without its Try into a no-op and blocks a late Try).
- saga: run the actions one by one in the declared order, stopping at the first failure;
  on abort, compensate every branch in reverse order (null compensations are no-ops).

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
    PREPARING,
    decision_of,
    overall_reason,
)
from paxkit.faults import Faults
from paxkit.metrics import BRANCH_CALLS, TRANSACTIONS
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
        decided = self.decide(txn, "commit" if reason is None else "abort", reason)
        if decided.status == COMMITTING:
            self.faults.hit("after_decision")
        return self.finish(decided, events)

    def decide(self, txn: Txn, event: str, reason: str | None, lease_s: float | None = None) -> Txn:
        """Take the decision unless someone took one first (recovery, after the lease ran
        out): the transaction as the log now has it. One missing from the log (its relaxed
        begin was lost in a crash) is presumed aborted."""
        lease = self.txn_timeout_s if lease_s is None else lease_s
        status = self.log.move(txn.gtid, txn.status, event, reason=reason, lease_s=lease)
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

    def finish(
        self,
        txn: Txn,
        events: Sequence[Event] = (),
        retry_delay_s: float | None = None,
    ) -> Outcome:
        """Carry out a decided transaction; postponed to recovery if a branch can't finish.
        One still undecided (mode paxos, too few acceptors answering) stays preparing."""
        if txn.status == PREPARING:
            self.log.record(txn.gtid, events)
            return Outcome(txn.gtid, PREPARING, None)
        decision = decision_of(txn.status)
        results = self.complete(txn, decision)
        events = [*events, *(_event(r) for r in results)]
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


DRIVERS: tuple[type[Driver], ...] = (TwoPhaseCommit, Tcc, Saga)
