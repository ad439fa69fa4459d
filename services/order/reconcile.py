"""Settles orders left pending when their transaction's outcome never came back.

A pending order older than the recovery horizon is checked back at the coordinator, which
answers its outcome, recording `aborted` first for a transaction it never heard of (so a
late begin of it is refused). The order then follows that outcome.
"""

from __future__ import annotations

import logging

from paxkit.http import ServiceClient
from services.order.placement import settle_order
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
        """Settle what can be settled now; returns how many orders changed."""
        settled = 0
        for order in self.orders.stale_pending(self.horizon_s, BATCH):
            reply = self.coordinator.post(
                f"/transactions/{order['gtid']}/resolve",
                json={"mode": order["txn_mode"]},
                idempotent=True,
            )
            if not reply.ok:
                continue
            status, reason = reply.body["status"], reply.body.get("reason")
            if settle_order(self.orders, order["gtid"], status, reason):
                log.info(
                    "reconciled %s (%s)",
                    order["order_id"],
                    status,
                    extra={"order_id": order["order_id"], "gtid": order["gtid"]},
                )
                settled += 1
        return settled
