"""Settles orders left pending when their transaction's outcome never came back.

A pending order older than the recovery horizon is looked up at the coordinator: unknown
or aborted there means it can never commit (its branch only confirms a *pending* order, so
failing it first also makes any late prepare vote no), so it is failed.
"""

from __future__ import annotations

import logging

from paxkit.http import ServiceClient
from services.order.repository import OrderRepository

log = logging.getLogger(__name__)

BATCH = 50


class PendingOrderReconciler:
    def __init__(
        self, orders: OrderRepository, coordinator: ServiceClient, horizon_s: float
    ) -> None:
        self.orders = orders
        self.coordinator = coordinator
        self.horizon_s = horizon_s

    def run_once(self) -> int:
        """Settle what can be settled now; returns how many orders were failed."""
        failed = 0
        for order in self.orders.stale_pending(self.horizon_s, BATCH):
            reason = self._abort_reason(order["gtid"])
            if reason and self.orders.fail_pending(order["gtid"], reason):
                log.info(
                    "reconciled %s as failed (%s)",
                    order["order_id"],
                    reason,
                    extra={"order_id": order["order_id"], "gtid": order["gtid"]},
                )
                failed += 1
        return failed

    def _abort_reason(self, gtid: str) -> str | None:
        reply = self.coordinator.get(f"/transactions/{gtid}")
        if reply.status == 404:
            return "timeout"
        if reply.ok and reply.body["status"] in ("aborting", "aborted"):
            return str(reply.body.get("reason") or "aborted")
        return None
