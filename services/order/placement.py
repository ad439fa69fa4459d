"""Placing an order: validate, price, record it, and run it as a global transaction."""

from __future__ import annotations

import logging
import secrets
from dataclasses import asdict, dataclass
from typing import Any

from paxkit.barrier import mark_message_committed
from paxkit.errors import ApiError, InvalidInput, UpstreamTimeout, UpstreamUnavailable
from paxkit.faults import Faults
from paxkit.http import ServiceClient
from paxkit.messaging import PLACED
from paxkit.notify import host_allowed
from paxkit.outbox import enqueue
from services.order.domain import (
    CouponTerms,
    OrderRequest,
    PricedLine,
    Pricing,
    PricingRejected,
    parse_order_request,
    price_order,
)
from services.order.repository import OrderRepository, insert_order, order_body

log = logging.getLogger(__name__)

SYNC_MODES = ("2pc", "tcc", "saga")


@dataclass(frozen=True)
class Placed:
    """The HTTP answer to a placement: status, body, headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str]


def new_ids() -> tuple[str, str]:
    """(order_id, gtid): the gtid carries the order's random part so logs line up."""
    token = secrets.token_hex(10)
    return f"ord-{token}", f"gtx-{token}"


class OrderPlacement:
    def __init__(
        self,
        orders: OrderRepository,
        coordinator: ServiceClient,
        inventory: ServiceClient,
        coupon: ServiceClient,
        txn_timeout_s: float,
        faults: Faults,
        notify_hosts: tuple[str, ...],
    ) -> None:
        self.faults = faults
        self.notify_hosts = notify_hosts
        self.orders = orders
        self.coordinator = coordinator
        self.inventory = inventory
        self.coupon = coupon
        self.txn_timeout_s = txn_timeout_s

    def place(self, body: dict[str, Any], respond_async: bool = False) -> Placed:
        """Place an order; `respond_async` (the gateway's order_async switch) sends a
        synchronous mode through the message queue too (同步变异步)."""
        request = parse_order_request(body)
        if request.notify_url and not host_allowed(request.notify_url, self.notify_hosts):
            raise InvalidInput("notify_url", "notify_url's host is not on the allowed list")
        txn_mode = "msg" if respond_async else request.mode
        order_id, gtid = new_ids()
        prices, stock = self._catalog(request)
        coupon = self._coupon(request.coupon_id)
        try:
            pricing = price_order(request, prices, stock, coupon)
        except PricingRejected as rejection:
            return self._reject_upfront(order_id, request, prices, rejection)
        if txn_mode == "msg":
            return self._run_message(order_id, gtid, request, pricing)
        row = self.orders.insert(_order_row(order_id, gtid, request, pricing, "pending", txn_mode))
        return self._run_global(row, request, pricing)

    def _run_message(
        self, order_id: str, gtid: str, request: OrderRequest, pricing: Pricing
    ) -> Placed:
        """msg mode: prepare the message at the coordinator, commit the order and its event
        in one local transaction, submit, and answer 202 at once."""
        self.orders.require_customer(request.user_id)  # before the coordinator hears of it
        row = _order_row(order_id, gtid, request, pricing, "pending", "msg")
        branches = branches_for(row, "msg", request, pricing)
        reply = self.coordinator.post(
            "/transactions", json={"gtid": gtid, "mode": "msg", "branches": branches}
        )
        if not reply.ok:
            raise UpstreamUnavailable("The coordinator did not take the order's message.")
        with self.orders.db.transaction() as conn:
            mark_message_committed(conn, gtid, "order")
            stored = insert_order(conn, row)
            self.faults.hit("msg_before_commit")
            enqueue(
                conn,
                PLACED,
                {
                    "gtid": gtid,
                    "order_id": order_id,
                    "branches": {b["name"]: b["payload"] for b in branches},
                },
            )
        self.faults.hit("msg_before_submit")
        try:
            self.coordinator.post(f"/transactions/{gtid}/submit", json={}, idempotent=True)
        except ApiError as err:
            # The coordinator checks back with us (QueryPrepared) and finds it committed.
            log.warning(
                "submit of %s failed (%s); the check-back will settle it", gtid, err.message
            )
        return Placed(202, order_body(stored), {"Location": f"/api/orders/{order_id}"})

    def _catalog(self, request: OrderRequest) -> tuple[dict[str, int], dict[str, int]]:
        reply = self.inventory.get("/products", params={"sku": [i.sku for i in request.items]})
        if not reply.ok:
            raise UpstreamUnavailable("The inventory service could not look up prices.")
        items = reply.body["items"]
        return ({p["sku"]: p["price_cents"] for p in items}, {p["sku"]: p["stock"] for p in items})

    def _coupon(self, coupon_id: str | None) -> CouponTerms | None:
        if coupon_id is None:
            return None
        reply = self.coupon.get(f"/coupons/{coupon_id}")
        if reply.status == 404:
            return None
        if not reply.ok:
            raise UpstreamUnavailable("The coupon service could not look up the coupon.")
        return CouponTerms(**reply.body)

    def _reject_upfront(
        self,
        order_id: str,
        request: OrderRequest,
        prices: dict[str, int],
        rejection: PricingRejected,
    ) -> Placed:
        """Record the order as failed: no transaction ran, nothing was touched."""
        lines = tuple(PricedLine(i.sku, i.qty, prices.get(i.sku, 0)) for i in request.items)
        total = sum(line.price_cents * line.qty for line in lines)
        pricing = Pricing(
            lines, total, 0, request.red_packet_cents, max(total - request.red_packet_cents, 0)
        )
        row = self.orders.insert(
            {
                **_order_row(order_id, None, request, pricing, "failed", request.mode),
                "reason": rejection.reason,
            }
        )
        return _rejected(order_body(row), rejection.reason, str(rejection))

    def _run_global(self, row: dict[str, Any], request: OrderRequest, pricing: Pricing) -> Placed:
        """Run the order's global transaction and answer with its outcome."""
        body = order_body(row)
        try:
            reply = self.coordinator.post(
                "/transactions",
                json={
                    "gtid": row["gtid"],
                    "mode": request.mode,
                    "branches": branches_for(row, request.mode, request, pricing),
                },
                timeout_s=self.txn_timeout_s + 2.0,
            )
        except (UpstreamTimeout, UpstreamUnavailable) as err:
            log.warning("outcome of %s unknown: %s", row["gtid"], err.message)
            return _unknown_outcome(body)
        if not reply.ok:
            log.error("coordinator refused %s: %s %s", row["gtid"], reply.status, reply.body)
            return _unknown_outcome(body)
        status, reason = reply.body["status"], reply.body.get("reason") or "aborted"
        settle_order(self.orders, row["mode"], row["gtid"], status, reason)
        stored = self.orders.get(row["order_id"])
        if stored is not None and stored["status"] != "pending":
            body = order_body(stored)
        if status == "committed":
            return Placed(
                201, {**body, "status": "confirmed"}, {"Location": f"/api/orders/{row['order_id']}"}
            )
        return _rejected(
            {**body, "status": "failed", "reason": reason},
            reason,
            f"The order was rejected: {reason}.",
        )


def settle_order(
    orders: OrderRepository, mode: str, gtid: str, status: str, reason: str | None
) -> bool:
    """Bring the order in line with its transaction's outcome.

    In 2PC the order is itself a branch (its commit confirms it, its rollback fails it), so
    nothing is left to do; in TCC and saga the order follows the coordinator's outcome."""
    if mode == "2pc":
        return False
    if status in ("committing", "committed"):
        return orders.confirm_pending(gtid)
    if status in ("aborting", "aborted"):
        return orders.fail_pending(gtid, reason or "aborted")
    return False


def branches_for(
    row: dict[str, Any], txn_mode: str, request: OrderRequest, pricing: Pricing
) -> list[dict]:
    """Every branch with an effect on this order, in saga order; one with nothing to do is
    left out. In 2PC the order itself is a branch too."""
    common = {"order_id": row["order_id"], "gtid": row["gtid"]}
    branches: list[dict[str, Any]] = [{"name": "order", "payload": common}]
    if txn_mode != "2pc":
        branches = []
    branches += [
        {
            "name": "inventory",
            "payload": {**common, "items": [{"sku": i.sku, "qty": i.qty} for i in request.items]},
        },
    ]
    if pricing.discount_cents > 0:
        branches.append(
            {
                "name": "coupon",
                "payload": {
                    **common,
                    "coupon_id": request.coupon_id,
                    "user_id": request.user_id,
                    "total_cents": pricing.total_cents,
                },
            }
        )
    if pricing.red_packet_cents > 0:
        branches.append(
            {
                "name": "redpacket",
                "payload": {
                    **common,
                    "user_id": request.user_id,
                    "amount_cents": pricing.red_packet_cents,
                },
            }
        )
    return branches


def _order_row(
    order_id: str,
    gtid: str | None,
    request: OrderRequest,
    pricing: Pricing,
    status: str,
    txn_mode: str,
) -> dict[str, Any]:
    return {
        "txn_mode": txn_mode,
        "order_id": order_id,
        "gtid": gtid,
        "user_id": request.user_id,
        "mode": request.mode,
        "status": status,
        "reason": None,
        "items": [asdict(line) for line in pricing.lines],
        "coupon_id": request.coupon_id,
        "total_cents": pricing.total_cents,
        "discount_cents": pricing.discount_cents,
        "red_packet_cents": pricing.red_packet_cents,
        "payable_cents": pricing.payable_cents,
        "notify_url": request.notify_url,
    }


def _rejected(body: dict[str, Any], reason: str, message: str) -> Placed:
    error = {"code": reason, "message": message, "order_id": body["order_id"]}
    return Placed(409, {**body, "error": error}, {"Location": f"/api/orders/{body['order_id']}"})


def _unknown_outcome(body: dict[str, Any]) -> Placed:
    error = {
        "code": "upstream_timeout",
        "order_id": body["order_id"],
        "message": "The order's outcome is not known yet; follow its Location.",
    }
    return Placed(504, {**body, "error": error}, {"Location": f"/api/orders/{body['order_id']}"})
