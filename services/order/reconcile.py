"""Settles orders left pending when their transaction's outcome never came back.

A pending order older than the recovery horizon is checked back at the coordinator, which
answers its outcome, recording `aborted` first for a synchronous transaction it never
heard of (so a late begin of it is refused). The order then follows that outcome.

A msg order is committed here already: a coordinator that has not logged its begin yet
has it still on its way (a backlog) or lost it (a coordinator database restored from
before it). Once the order is older than `resend_s`, its events are sent again; the
coordinator's log and the branches' barriers make a second copy harmless. An order
checked without settling goes to the back of the line, so no backlog starves the rest.
Every replica of the order worker runs the reconciler; a lease lets one of them at a time
check orders back, and its token fences the writes (PendingOrderReconciler).

A `naive` order (the unsafe baseline, paxkit/naive.py) is never checked: no coordinator
holds its outcome and no participant logged its part, so one left pending (its initiator
died between recording it and hearing every part) stays pending, and the audit reports it
as `order_stuck_pending` for a person to sort out, as it would be without paxmart.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection

from paxkit.faults import Faults
from paxkit.http import ServiceClient
from paxkit.lease import Fence, Lease, LeaseLost, Leases, StaleToken
from paxkit.messaging import transaction_messages
from paxkit.outbox import enqueue_all
from services.order.placement import order_parts, settle_order
from services.order.repository import OrderRepository, schedule_check

log = logging.getLogger(__name__)

BATCH = 50
# The lease every replica of the order worker asks for before a run, and the resource its
# writes are fenced on. Renewed before each order, so it need only outlast one check-back.
RECONCILER = "order-reconciler"
LEASE_TTL_S = 30.0
# Where a test or scenario can stall the reconciler: after the check-back, before the write.
BEFORE_WRITE = "reconciler_before_write"


def wait_before_resend(age_s: float, resend_s: float) -> float:
    """Seconds until the events of a msg order the coordinator never logged may be sent
    again: none once the order is `resend_s` old."""
    return max(0.0, resend_s - age_s)


class PendingOrderReconciler:
    """The order worker's singleton job. Every replica runs this loop; a run needs the
    `order-reconciler` lease (paxkit.lease), so one replica at a time checks orders back
    and the others skip that turn. Its writes (the events sent again and the schedule of
    each order) are fenced by the lease's token, in the same transaction: a replica
    paused past its lease, which wakes and writes what it decided before the pause, is
    refused instead of sending the events again and overwriting its successor's schedule.
    Settling an order is not fenced: it follows the coordinator's final outcome, only
    while the order is pending, and the settlement consumer does it without a lease too.

    `fencing=False` leaves the resource side out (the lease is still taken and renewed):
    only for a scenario that shows what a lease without fencing lets through."""

    def __init__(
        self,
        orders: OrderRepository,
        coordinator: ServiceClient,
        horizon_s: float,
        resend_s: float,
        leases: Leases,
        lease_ttl_s: float = LEASE_TTL_S,
        faults: Faults | None = None,
        fencing: bool = True,
    ) -> None:
        self.orders = orders
        self.coordinator = coordinator
        self.horizon_s = horizon_s
        self.resend_s = resend_s
        self.leases = leases
        self.lease_ttl_s = lease_ttl_s
        self.faults = faults or Faults("order", None)
        self.fence = Fence(RECONCILER) if fencing else None

    def run_once(self) -> int:
        """Settle what can be settled now, if this replica gets the lease; returns how many
        orders changed."""
        lease = self.leases.acquire(RECONCILER, self.lease_ttl_s)
        if lease is None:
            return 0
        try:
            self._claim_fence(lease)
            return self._reconcile_due(lease)
        finally:
            self.leases.release(lease)

    def _reconcile_due(self, lease: Lease) -> int:
        changed = 0
        for order in self.orders.stale_pending(self.horizon_s, BATCH):
            try:
                self.leases.renew(lease, self.lease_ttl_s)
                changed += self._reconcile(order, lease)
            except (LeaseLost, StaleToken) as err:
                log.warning("order reconciler stops this run: %s", err)
                break
        return changed

    def _reconcile(self, order: dict[str, Any], lease: Lease) -> int:
        reply = self.coordinator.post(
            f"/transactions/{order['gtid']}/resolve",
            json={"mode": order["txn_mode"]},
            idempotent=True,
        )
        self.faults.hit(BEFORE_WRITE)
        if reply.status == 404 and order["txn_mode"] == "msg":
            self._send_again(order, lease)
            return 0
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
        with self._fenced(lease) as conn:
            schedule_check(conn, order["order_id"], self.horizon_s)
        return 0

    def _send_again(self, order: dict[str, Any], lease: Lease) -> None:
        """The coordinator has no begin of this msg order: send its events again, once per
        `resend_s`."""
        wait_s = wait_before_resend(order["age_s"], self.resend_s)
        resend = wait_s == 0
        with self._fenced(lease) as conn:
            if resend:
                log.warning(
                    "msg order %s unknown to the coordinator: sending its events again",
                    order["order_id"],
                    extra={"order_id": order["order_id"], "gtid": order["gtid"]},
                )
                publish_again(conn, order)
            schedule_check(conn, order["order_id"], self.resend_s if resend else wait_s)

    def _claim_fence(self, lease: Lease) -> None:
        """Show the fence the new token at the start of a run, so every older holder is
        refused from now on, even if this run finds nothing to write."""
        if self.fence is None:
            return
        with self._fenced(lease):
            return

    @contextmanager
    def _fenced(self, lease: Lease) -> Iterator[Connection]:
        """A local transaction for the job's writes, admitted by the fence under the lease's
        token first (StaleToken once a later holder has written)."""
        with self.orders.db.transaction() as conn:
            if self.fence is not None:
                self.fence.check(conn, lease.token)
            yield conn


def publish_again(conn: Connection, order: dict[str, Any]) -> None:
    enqueue_all(conn, transaction_messages(order["gtid"], order["order_id"], order_parts(order)))
