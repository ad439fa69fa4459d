"""Placing an order: validate, price, record it, and run it as a global transaction.

Placement is idempotent on the order id the caller (the gateway) assigns: an order id
already recorded is answered with that order's current state (confirmed 201, failed 409,
pending 202 + Location) instead of being placed again, so a retry after a lost answer can
never place or charge twice. Each attempt runs its own global transaction (its own gtid).

The order row follows the coordinator's outcome in every mode; the order service is never
a branch of its own transaction. If the row can't be written right after the coordinator
answered, the answer still gives that outcome and the reconciler brings the row in line.

The `naive` baseline (paxkit/naive.py, off unless PAXMART_NAIVE_MODE enables it) has no
coordinator: the parts go straight to the participants and the row follows their answers,
confirmed when every part applied, else failed with the first rejection's reason, the parts
that applied left applied. Nothing reconciles a naive order left pending.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import asdict, dataclass
from typing import Any

from paxkit.db import UNAVAILABLE
from paxkit.errors import (
    InvalidInput,
    OutcomeUnknown,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from paxkit.faults import Faults
from paxkit.http import ServiceClient
from paxkit.messaging import transaction_messages
from paxkit.naive import MODE as NAIVE
from paxkit.naive import NaiveParts, first_rejection
from paxkit.notify import host_allowed
from paxkit.outbox import enqueue_all
from paxkit.threepc import MODE as THREEPC
from paxkit.threepc import threepc_refused
from services.order.catalog import PriceBook
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

SYNC_MODES = ("2pc", "tcc", "saga", "3pc", "paxos")


@dataclass(frozen=True)
class Placed:
    """The HTTP answer to a placement: status, body, headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str]


class AlreadyPlaced(Exception):
    """Another attempt recorded this order id first."""


def new_ids(order_id: str | None) -> tuple[str, str]:
    """(order_id, gtid): the given order id, else a new one; a gtid of this attempt's own
    that carries the order's id, so logs line up."""
    order_id = order_id or f"ord-{secrets.token_hex(10)}"
    return order_id, f"gtx-{order_id.removeprefix('ord-')}-{secrets.token_hex(3)}"


class OrderPlacement:
    def __init__(
        self,
        orders: OrderRepository,
        coordinator: ServiceClient,
        prices: PriceBook,
        coupon: ServiceClient,
        txn_timeout_s: float,
        faults: Faults,
        notify_hosts: tuple[str, ...],
        naive: NaiveParts | None = None,
        threepc: bool = False,
    ) -> None:
        self.faults = faults
        self.naive = naive  # None: the stack does not enable mode naive
        self.threepc = threepc  # whether the stack enables mode 3pc
        self.notify_hosts = notify_hosts
        self.orders = orders
        self.coordinator = coordinator
        self.prices = prices
        self.coupon = coupon
        self.txn_timeout_s = txn_timeout_s

    def place(
        self, body: dict[str, Any], respond_async: bool = False, order_id: str | None = None
    ) -> Placed:
        """Place an order (under `order_id` when given, answering its state if it exists);
        `respond_async` (the gateway's order_async switch) sends a synchronous mode through
        the message queue too (同步变异步)."""
        request = parse_order_request(body)
        if request.notify_url and not host_allowed(request.notify_url, self.notify_hosts):
            raise InvalidInput("notify_url", "notify_url's host is not on the allowed list")
        if request.mode == NAIVE and self.naive is None:
            raise naive_refused()
        if request.mode == THREEPC and not self.threepc:
            raise threepc_refused()
        existing = self.orders.get(order_id) if order_id else None
        if existing is not None:
            return answer_for(existing)
        order_id, gtid = new_ids(order_id)
        try:
            return self._place_new(order_id, gtid, request, respond_async)
        except AlreadyPlaced:
            return self._answer_existing(order_id)

    def _place_new(
        self, order_id: str, gtid: str, request: OrderRequest, respond_async: bool
    ) -> Placed:
        txn_mode = "msg" if respond_async else request.mode
        prices = self._prices(request)
        coupon = self._coupon(request.coupon_id)
        try:
            pricing = price_order(request, prices, coupon)
        except PricingRejected as rejection:
            return self._reject_upfront(order_id, request, prices, rejection)
        if txn_mode == "msg":
            return self._run_message(order_id, gtid, request, pricing)
        row = self._insert(_order_row(order_id, gtid, request, pricing, "pending", txn_mode))
        if txn_mode == NAIVE:
            return self._run_naive(row)
        return self._run_global(row, request)

    def _insert(self, order: dict[str, Any]) -> dict[str, Any]:
        row = self.orders.insert(order)
        if row is None:
            raise AlreadyPlaced(order["order_id"])
        return row

    def _answer_existing(self, order_id: str) -> Placed:
        row = self.orders.get(order_id)
        if row is None:  # it conflicted with a row that exists: a read can't miss it
            raise AssertionError(f"order {order_id} conflicted but is not there")
        return answer_for(row)

    def _run_message(
        self, order_id: str, gtid: str, request: OrderRequest, pricing: Pricing
    ) -> Placed:
        """msg mode: the order and its events commit in one local transaction (the outbox),
        and the answer is 202 at once; the coordinator and the participants hear of it
        from the relay."""
        row = _order_row(order_id, gtid, request, pricing, "pending", "msg")
        with self.orders.db.transaction() as conn:
            stored = insert_order(conn, row)
            if stored is None:
                raise AlreadyPlaced(order_id)
            self.faults.hit("msg_before_commit")
            enqueue_all(conn, transaction_messages(gtid, order_id, order_parts(row)))
        return Placed(202, order_body(stored), _location(order_id))

    def _prices(self, request: OrderRequest) -> dict[str, int]:
        return self.prices.prices(i.sku for i in request.items)

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
        row = self._insert(
            {
                **_order_row(order_id, None, request, pricing, "failed", request.mode),
                "reason": rejection.reason,
            }
        )
        return _rejected(order_body(row), rejection.reason, str(rejection))

    def _run_global(self, row: dict[str, Any], request: OrderRequest) -> Placed:
        """Run the order's global transaction and answer with its outcome."""
        body = order_body(row)
        try:
            reply = self.coordinator.post(
                "/transactions",
                json={
                    "gtid": row["gtid"],
                    "mode": request.mode,
                    "branches": branches_for(row),
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
        return self._answer_outcome(row, status, reason)

    def _run_naive(self, row: dict[str, Any]) -> Placed:
        """naive mode: every part straight to its participant, in parallel, each committed
        there on its own; a rejected part fails the order and undoes nothing (unsafe)."""
        assert self.naive is not None
        reason = first_rejection(self.naive.apply(row["gtid"], order_parts(row)))
        return self._answer_outcome(row, "committed" if reason is None else "aborted", reason)

    def _answer_outcome(self, row: dict[str, Any], status: str, reason: str | None) -> Placed:
        """The order row follows the outcome; 201 when committed, else 409 with the reason."""
        reason = reason or "aborted"
        body = self._follow(row, status, reason)
        if status == "committed":
            return Placed(201, {**body, "status": "confirmed"}, _location(row["order_id"]))
        return _rejected(
            {**body, "status": "failed", "reason": reason},
            reason,
            f"The order was rejected: {reason}.",
        )

    def _follow(self, row: dict[str, Any], status: str, reason: str) -> dict[str, Any]:
        """The order row follows the outcome (the coordinator's; naive: the parts'); the body
        to answer with. A database failure here changes nothing of the outcome: the
        reconciler settles the row later (a naive one stays pending)."""
        try:
            self.faults.hit("before_settle")
            settle_order(self.orders, row["gtid"], status, reason)
            stored = self.orders.get(row["order_id"])
        except UNAVAILABLE as err:
            later = "it stays pending" if row["mode"] == NAIVE else "the reconciler will"
            log.warning("order %s not settled yet (%s); %s", row["order_id"], err, later)
            return order_body(row)
        return order_body(stored if stored is not None else row)


def naive_refused() -> InvalidInput:
    """400 `unsupported_mode`: the stack does not enable the unsafe baseline."""
    return InvalidInput(
        "mode",
        "mode naive (no protocol, unsafe: a benchmark baseline) is off here; "
        "PAXMART_NAIVE_MODE=1 enables it",
        code="unsupported_mode",
    )


def answer_for(row: dict[str, Any]) -> Placed:
    """The answer of a placement that finds its order recorded: its current state."""
    body = order_body(row)
    if row["status"] == "confirmed":
        return Placed(201, body, _location(row["order_id"]))
    if row["status"] == "failed":
        return _rejected(body, row["reason"], f"The order was rejected: {row['reason']}.")
    return Placed(202, body, _location(row["order_id"]))


def settle_order(orders: OrderRepository, gtid: str, status: str, reason: str | None) -> bool:
    """Bring the order in line with its transaction's outcome (the coordinator decides, in
    every mode; the order row follows); True when it changed."""
    if status in ("committing", "committed"):
        return orders.confirm_pending(gtid)
    if status in ("aborting", "aborted"):
        return orders.fail_pending(gtid, reason or "aborted")
    return False


def order_parts(order: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What each participant does for this order, by name, in saga order, from the order as
    stored; a participant with nothing to do is left out."""
    common = {"order_id": order["order_id"], "gtid": order["gtid"]}
    parts = {
        "inventory": {
            **common,
            "items": [{"sku": i["sku"], "qty": i["qty"]} for i in order["items"]],
        }
    }
    if order["discount_cents"] > 0:
        parts["coupon"] = {
            **common,
            "coupon_id": order["coupon_id"],
            "user_id": order["user_id"],
            "total_cents": order["total_cents"],
        }
    if order["red_packet_cents"] > 0:
        parts["redpacket"] = {
            **common,
            "user_id": order["user_id"],
            "amount_cents": order["red_packet_cents"],
        }
    return parts


def branches_for(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The transaction's branches: every participant with a part in the order."""
    return [{"name": name, "payload": part} for name, part in order_parts(row).items()]


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


def _location(order_id: str) -> dict[str, str]:
    return {"Location": f"/api/orders/{order_id}"}


def _rejected(body: dict[str, Any], reason: str, message: str) -> Placed:
    error = {"code": reason, "message": message, "order_id": body["order_id"]}
    return Placed(409, {**body, "error": error}, _location(body["order_id"]))


def _unknown_outcome(body: dict[str, Any]) -> Placed:
    """The order is recorded (pending), but its transaction's outcome did not come back."""
    error = {
        "code": OutcomeUnknown.code,
        "order_id": body["order_id"],
        "message": "The order's outcome is not known yet; follow its Location.",
    }
    return Placed(504, {**body, "error": error}, _location(body["order_id"]))
