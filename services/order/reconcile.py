"""Settles orders left pending when their transaction's outcome never came back.

A pending order older than the recovery horizon is checked back at the coordinator, which
answers its outcome, recording `aborted` first for a synchronous transaction it never
heard of (so a late begin of it is refused). The order then follows that outcome.

A msg order is committed here already: a coordinator that has not logged its begin yet
has it still on its way (a backlog) or lost it (a coordinator database restored from
before it). Once the order is older than `resend_s`, its events are sent again; the
coordinator's log and the branches' barriers make a second copy harmless. An order
checked without settling goes to the back of the line, so no backlog starves the rest.

A `naive` order (the unsafe baseline, paxkit/naive.py) is never checked: no coordinator
holds its outcome and no participant logged its part, so one left pending (its initiator
died between recording it and hearing every part) stays pending, and the audit reports it
as `order_stuck_pending` for a person to sort out, as it would be without paxmart.
"""

from __future__ import annotations

import logging
from typing import Any

from paxkit.db import Database
from paxkit.http import ServiceClient
from paxkit.messaging import transaction_messages
from paxkit.outbox import enqueue_all
from services.order.placement import order_parts, settle_order
from services.order.repository import OrderRepository

log = logging.getLogger(__name__)

BATCH = 50


class PendingOrderReconciler:
    def __init__(
        self,
        orders: OrderRepository,
        coordinator: ServiceClient,
        horizon_s: float,
        resend_s: float,
    ) -> None:
        self.orders = orders
        self.coordinator = coordinator
        self.horizon_s = horizon_s
        self.resend_s = resend_s

    def run_once(self) -> int:
        """Settle what can be settled now; returns how many orders changed."""
        return sum(
            self._reconcile(order) for order in self.orders.stale_pending(self.horizon_s, BATCH)
        )

    def _reconcile(self, order: dict[str, Any]) -> int:
        reply = self.coordinator.post(
            f"/transactions/{order['gtid']}/resolve",
            json={"mode": order["txn_mode"]},
            idempotent=True,
        )
        if reply.status == 404 and order["txn_mode"] == "msg":
            return self._send_again(order)
        if reply.ok:
            status, reason = reply.body["status"], reply.body.get("reason")
            if settle_order(self.orders, order["gtid"], status, reason):
                log.info(
                    "reconciled %s (%s)",
                    order["order_id"],
                    status,
                    extra={"order_id": order["order_id"], "gtid": order["gtid"]},
                )
                return 1
        self.orders.check_again_in(order["order_id"], self.horizon_s)
        return 0

    def _send_again(self, order: dict[str, Any]) -> int:
        """The coordinator has no begin of this msg order: send its events again, once per
        `resend_s`."""
        if order["age_s"] >= self.resend_s:
            log.warning(
                "msg order %s unknown to the coordinator: sending its events again",
                order["order_id"],
                extra={"order_id": order["order_id"], "gtid": order["gtid"]},
            )
            publish_again(self.orders.db, order)
            self.orders.check_again_in(order["order_id"], self.resend_s)
        else:
            self.orders.check_again_in(order["order_id"], self.resend_s - order["age_s"])
        return 0


def publish_again(db: Database, order: dict[str, Any]) -> None:
    with db.transaction() as conn:
        enqueue_all(
            conn, transaction_messages(order["gtid"], order["order_id"], order_parts(order))
        )
