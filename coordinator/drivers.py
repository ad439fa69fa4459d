"""Drivers for the transaction modes: a forward phase, one decision, then its completion.

Every mode shares the same skeleton (and the same log and recovery):

    forward phase  -> decide (conditional on still `preparing`) -> complete the decision

- 2pc:  prepare every branch in parallel; commit or roll back every branch. Presumed
  abort: only the commit decision is written synchronously.
- tcc:  Try every branch in parallel; Confirm or Cancel every branch (the barrier turns a
  Cancel without its Try into a no-op and blocks a late Try).
- saga: run the actions one by one in the declared order, stopping at the first failure;
  on abort, compensate every branch in reverse order (null compensations are no-ops).

Completion that can't finish now is postponed; recovery retries it with backoff.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from coordinator.branches import Branches, BranchResult
from coordinator.log import Event, TxnLog
from coordinator.states import (
    ABORTED,
    ABORTING,
    COMMITTED,
    COMMITTING,
    PREPARING,
    decision_of,
    next_status,
    overall_reason,
)
from paxkit.faults import Faults
from paxkit.metrics import BRANCH_CALLS, TRANSACTIONS
from paxkit.tracing import in_current_context

log = logging.getLogger(__name__)

Branch = dict[str, Any]


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
    durable_begin = True

    def __init__(
        self,
        txn_log: TxnLog,
        branches: Branches,
        faults: Faults,
        pool: ThreadPoolExecutor,
        txn_timeout_s: float,
        retry_delay_s: float,
    ) -> None:
        self.log = txn_log
        self.branches = branches
        self.faults = faults
        self.pool = pool
        self.txn_timeout_s = txn_timeout_s
        self.retry_delay_s = retry_delay_s

    def forward(self, txn: dict[str, Any]) -> list[BranchResult]:
        raise NotImplementedError

    def complete(self, txn: dict[str, Any], decision: str) -> list[BranchResult]:
        raise NotImplementedError

    def run(self, txn: dict[str, Any]) -> Outcome:
        """Drive a transaction just begun (status preparing) to its outcome."""
        results = self.forward(txn)
        events = [_event(r) for r in results]
        failed = [r for r in results if not r.ok]
        reason = overall_reason([r.reason or "aborted" for r in failed])
        if reason is None and len(results) < len(txn["branches"]):
            reason = "aborted"
        self.faults.hit("before_decision")
        decision = COMMITTING if reason is None else ABORTING
        status = self.log.decide(txn, decision, reason, self.txn_timeout_s)
        if status == COMMITTING:
            self.faults.hit("after_decision")
        elif reason is None:
            reason = "timeout"  # recovery aborted it while the forward phase was slow
        return self.finish({**txn, "status": status, "reason": reason}, events)

    def recover(self, txn: dict[str, Any], lease_s: float, retry_delay_s: float) -> str:
        """Take over a transaction whose driver died or stalled: a forward phase that never
        decided is aborted (presumed abort); a decided one is carried out."""
        if txn["status"] == PREPARING:
            status = self.log.decide(txn, ABORTING, "timeout", lease_s)
            txn = {**txn, "status": status, "reason": txn["reason"] or "timeout"}
        self.finish(txn, retry_delay_s=retry_delay_s)
        return decision_of(txn["status"])

    def finish(
        self,
        txn: dict[str, Any],
        events: list[Event] | None = None,
        retry_delay_s: float | None = None,
    ) -> Outcome:
        """Carry out a decided transaction; postponed to recovery if a branch can't finish."""
        gtid, status = txn["gtid"], txn["status"]
        decision = decision_of(status)
        results = self.complete(txn, decision)
        events = (events or []) + [_event(r) for r in results]
        final = COMMITTED if decision == "commit" else ABORTED
        if all(r.ok for r in results):
            if status in (COMMITTING, ABORTING):
                next_status(status, "done")
                self.log.finish(gtid, status, final, events)
                TRANSACTIONS.labels(txn["mode"], final).inc()
        else:
            log.warning(
                "%s of %s incomplete; recovery will retry", decision, gtid, extra={"gtid": gtid}
            )
            self.log.postpone(gtid, retry_delay_s or self.retry_delay_s, events)
        return Outcome(gtid, final, txn.get("reason") if final == ABORTED else None)

    def _parallel(
        self, op: str, txn: dict[str, Any], reason: str | None = None
    ) -> list[BranchResult]:
        call = in_current_context(
            lambda b: self.branches.call(
                self.mode, op, b["name"], txn["gtid"], b["payload"], reason
            )
        )
        return list(self.pool.map(call, txn["branches"]))


class TwoPhaseCommit(Driver):
    mode = "2pc"
    durable_begin = False  # presumed abort: a lost begin is an abort

    def forward(self, txn: dict[str, Any]) -> list[BranchResult]:
        return self._parallel("prepare", txn)

    def complete(self, txn: dict[str, Any], decision: str) -> list[BranchResult]:
        op = "commit" if decision == "commit" else "rollback"
        return self._parallel(op, txn, txn.get("reason"))


class Tcc(Driver):
    mode = "tcc"

    def forward(self, txn: dict[str, Any]) -> list[BranchResult]:
        return self._parallel("try", txn)

    def complete(self, txn: dict[str, Any], decision: str) -> list[BranchResult]:
        return self._parallel("confirm" if decision == "commit" else "cancel", txn)


class Saga(Driver):
    mode = "saga"

    def forward(self, txn: dict[str, Any]) -> list[BranchResult]:
        results = []
        for branch in txn["branches"]:
            result = self.branches.call(
                "saga", "action", branch["name"], txn["gtid"], branch["payload"]
            )
            results.append(result)
            if not result.ok:
                break
        return results

    def complete(self, txn: dict[str, Any], decision: str) -> list[BranchResult]:
        """Nothing to do after success; on abort, compensate in reverse, stopping at a failure
        (a later compensation must not run before an earlier one has)."""
        if decision == "commit":
            return []
        results = []
        for branch in reversed(txn["branches"]):
            result = self.branches.call(
                "saga", "compensate", branch["name"], txn["gtid"], branch["payload"]
            )
            results.append(result)
            if not result.ok:
                break
        return results


DRIVERS: tuple[type[Driver], ...] = (TwoPhaseCommit, Tcc, Saga)
