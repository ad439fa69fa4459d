"""Recovery: finish every in-doubt transaction, and leave no prepared branch orphaned.

Runs at start and then periodically in every coordinator process; leases taken with
`FOR UPDATE SKIP LOCKED` keep two processes off the same transaction.
"""

from __future__ import annotations

import logging
import random

from coordinator.drivers import Driver
from coordinator.ports import BranchClient, TransactionLog, Txn
from coordinator.states import COMMITTED, COMMITTING, PREPARING
from paxkit.errors import ApiError
from paxkit.metrics import RECOVERED

log = logging.getLogger(__name__)

BATCH = 20
BACKOFF_CAP_S = 30.0


def backoff_s(attempts: int, base_s: float) -> float:
    """Capped exponential backoff with full jitter."""
    ceiling = min(BACKOFF_CAP_S, base_s * (2 ** min(attempts, 10)))
    return random.uniform(base_s, max(base_s, ceiling))


class Recovery:
    def __init__(
        self,
        txn_log: TransactionLog,
        branches: BranchClient,
        drivers: dict[str, Driver],
        horizon_s: float,
        lease_s: float,
        base_delay_s: float,
    ) -> None:
        self.log = txn_log
        self.branches = branches
        self.drivers = drivers
        self.horizon_s = horizon_s
        self.lease_s = lease_s
        self.base_delay_s = base_delay_s

    def run_once(self) -> dict[str, int]:
        finished = self.finish_in_doubt()
        orphans = self.resolve_orphans()
        return {"finished": finished, "orphans": orphans}

    def finish_in_doubt(self) -> int:
        """Take over transactions whose driver died or stalled past its lease."""
        count = 0
        for txn in self.log.claim_expired(BATCH, self.lease_s):
            self._finish(txn)
            count += 1
        return count

    def _finish(self, txn: Txn) -> None:
        log.info("recovery takes over %s (%s)", txn.gtid, txn.status, extra={"gtid": txn.gtid})
        delay = backoff_s(txn.recovery_attempts, self.base_delay_s)
        action = self.drivers[txn.mode].recover(txn, self.lease_s, delay)
        RECOVERED.labels(action).inc()

    def resolve_orphans(self) -> int:
        """2PC branches prepared longer than the horizon follow the log; unknown gtids roll back
        (unless a mode adopts them: a paxos transaction is never presumed aborted).

        (TCC and saga branches can't be orphaned this way: their begin is logged durably
        before any branch is called, so recovery always knows them.)"""
        resolved = 0
        for name in self.branches.names:
            try:
                prepared = self.branches.prepared(name)
            except ApiError as err:
                log.warning("cannot list prepared branches of %s: %s", name, err.message)
                continue
            old = [p for p in prepared if p["age_s"] > self.horizon_s]
            if not old:
                continue
            statuses = self.log.statuses([p["gtid"] for p in old])
            statuses.update(self._adopt([p["gtid"] for p in old if p["gtid"] not in statuses]))
            for item in old:
                resolved += self._resolve_orphan(name, item["gtid"], statuses.get(item["gtid"]))
        return resolved

    def _adopt(self, unknown: list[str]) -> dict[str, str]:
        """Gtids the log lost that a mode knows of elsewhere (paxos), before any is presumed
        aborted."""
        adopted: dict[str, str] = {}
        if not unknown:
            return adopted
        for driver in self.drivers.values():
            adopted.update(driver.adopt(unknown))
        return adopted

    def _resolve_orphan(self, name: str, gtid: str, status: str | None) -> int:
        if status == PREPARING:
            return 0  # its lease expires and finish_in_doubt decides it
        op = "commit" if status in (COMMITTING, COMMITTED) else "rollback"
        result = self.branches.call("2pc", op, name, gtid, {}, "aborted")
        log.warning(
            "orphan branch %s of %s (log: %s): %s -> %s",
            name,
            gtid,
            status,
            op,
            "ok" if result.ok else result.detail,
            extra={"gtid": gtid, "branch": name},
        )
        RECOVERED.labels(f"orphan_{op}").inc()
        return 1 if result.ok else 0
