"""The 2PC driver: phase 1 in parallel, a durable decision, phase 2 until done.

Presumed abort: with no commit decision in the log, a transaction is aborted. So only the
commit decision is written synchronously; a crash anywhere before it rolls back, a crash
after it is finished by recovery, and phase 2 is idempotent on every participant.
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
    next_status,
    overall_reason,
    phase_two_operation,
)
from paxkit.faults import Faults
from paxkit.metrics import BRANCH_CALLS, TRANSACTIONS

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
    return Event(result.branch, result.op, outcome, result.detail)


class TwoPhaseCommit:
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

    def run(self, txn: dict[str, Any]) -> Outcome:
        """Drive a transaction just begun (status preparing) to its outcome."""
        gtid = txn["gtid"]
        votes = list(
            self.pool.map(
                lambda b: self.branches.prepare(b["name"], gtid, b["payload"]), txn["branches"]
            )
        )
        events = [_event(v) for v in votes]
        reason = overall_reason([v.reason or "aborted" for v in votes if not v.ok])
        self.faults.hit("before_decision")
        decision = COMMITTING if reason is None else ABORTING
        status = self.log.decide(txn, decision, reason, self.txn_timeout_s)
        if status == COMMITTING:
            self.faults.hit("after_decision")
        elif reason is None:
            reason = "timeout"  # recovery aborted it while phase 1 was slow
        return self.finish({**txn, "status": status, "reason": reason}, events)

    def finish(
        self,
        txn: dict[str, Any],
        events: list[Event] | None = None,
        retry_delay_s: float | None = None,
    ) -> Outcome:
        """Phase 2 for a decided transaction; postponed to recovery if a branch can't finish."""
        gtid, status = txn["gtid"], txn["status"]
        op = phase_two_operation(status)
        results = list(
            self.pool.map(
                lambda b: self.branches.phase_two(b["name"], op, gtid, txn.get("reason")),
                txn["branches"],
            )
        )
        events = (events or []) + [_event(r) for r in results]
        final = COMMITTED if op == "commit" else ABORTED
        if all(r.ok for r in results):
            if status in (COMMITTING, ABORTING):
                next_status(status, "done")
                self.log.finish(gtid, status, final, events)
                TRANSACTIONS.labels(txn["mode"], final).inc()
        else:
            log.warning(
                "phase 2 (%s) of %s incomplete; recovery will retry", op, gtid, extra={"gtid": gtid}
            )
            self.log.postpone(gtid, retry_delay_s or self.retry_delay_s, events)
        return Outcome(gtid, final, txn.get("reason") if final == ABORTED else None)
