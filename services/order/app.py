"""Order service: creates orders and runs each as a global transaction at the coordinator.

It is no participant of those transactions: its order row follows the coordinator's
decision (the coordinator's answer, the msg settlement message, or the reconciler's
check-back), so no placement ever waits on a call back into its own process. It is the
initiator of msg transactions: an order and its events commit in one local transaction.
Where the stack enables the unsafe `naive` baseline, it also posts a naive order's parts to
the participants itself (paxkit/naive.py).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify, request
from sqlalchemy import Connection

from paxkit.app import make_faults
from paxkit.audit import horizon_arg, leftovers_blueprint
from paxkit.background import Loop
from paxkit.component import Background, Component, ComponentSpec
from paxkit.config import Settings, load_settings
from paxkit.db import Database, make_engine, run
from paxkit.deadletters import serve_dead_letters
from paxkit.errors import Forbidden, InvalidInput, NotFound
from paxkit.http import component_client
from paxkit.lease import Leases, new_owner
from paxkit.messaging import SETTLEMENTS_QUEUE, PoisonMessage
from paxkit.metrics import outbox_probe
from paxkit.naive import NaiveParts
from paxkit.notify import NOTIFICATION_RULES, Notifier
from paxkit.participant import protocol_retention
from paxkit.requests_json import json_body
from paxkit.runtime import dead_letter_store, messaging_work
from paxkit.schema import LEASE_SQL, PARTICIPANT_MIGRATIONS
from paxkit.validation import ID_PATTERN, validate_limit, validate_user_id
from paxkit.web import component_of
from paxkit.web import create_app as web_app
from services.order.catalog import PriceBook
from services.order.credentials import Credentials, parse_login
from services.order.domain import validate_order_id
from services.order.placement import OrderPlacement, order_parts
from services.order.reconcile import PendingOrderReconciler
from services.order.repository import (
    ORDER_COLUMNS,
    OrderRepository,
    order_body,
    settle_pending_order,
)

MAX_LIST = 100
MAX_AUDIT_PAGE = 1000
NOTIFY_POLL_S = 0.2
# The order id the gateway assigned; a placement under an id already recorded answers it.
ORDER_ID_HEADER = "X-Order-Id"
# The user the gateway authenticated (trusted only on a call with the service credential,
# which every route here requires): an order for anyone else is refused.
USER_HEADER = "X-Authenticated-User"

orders_bp = Blueprint("orders", __name__)


def _order() -> OrderComponent:
    component = component_of(current_app)
    assert isinstance(component, OrderComponent)
    return component


@orders_bp.post("/orders")
def place_order() -> Any:
    respond_async = "respond-async" in request.headers.get("Prefer", "")
    order_id = validate_order_id(request.headers.get(ORDER_ID_HEADER), ORDER_ID_HEADER)
    body = json_body()
    acting = request.headers.get(USER_HEADER)
    if acting is not None and str(body.get("user_id")) != acting:
        raise Forbidden("An order can only be placed for the authenticated user.")
    placed = _order().placement.place(body, respond_async=respond_async, order_id=order_id)
    return jsonify(placed.body), placed.status, placed.headers


@orders_bp.get("/orders/<order_id>")
def get_order(order_id: str) -> Any:
    row = _order().orders.get(order_id) if ID_PATTERN.match(order_id) else None
    if row is None:
        raise NotFound(f"No order {order_id!r}.", code="order_not_found")
    return jsonify(order_body(row))


@orders_bp.get("/users/<user_id>/orders")
def list_orders(user_id: str) -> Any:
    limit = validate_limit(request.args.get("limit"), MAX_LIST, MAX_LIST)
    rows = _order().orders.for_user(validate_user_id(user_id), limit)
    return jsonify({"items": [order_body(r) for r in rows]})


@orders_bp.post("/credentials/check")
def check_credentials() -> Any:
    """The gateway's login: 200 with the user's id when the password matches, else 401."""
    return jsonify({"user_id": _order().credentials.check(parse_login(json_body()))})


@orders_bp.get("/audit/orders")
def audit_orders() -> Any:
    """The initiator's side of the audit: a page of orders (by id), each with the part every
    participant should hold, and whether a pending one is older than the horizon."""
    after = request.args.get("after", "")
    if after and not ID_PATTERN.match(after):
        raise InvalidInput("after", "after must be an order id (1-64 characters of [A-Za-z0-9_-])")
    limit = request.args.get("limit", str(MAX_AUDIT_PAGE))
    if not (limit.isascii() and limit.isdigit()) or not 1 <= int(limit) <= MAX_AUDIT_PAGE:
        raise InvalidInput("limit", f"limit must be an integer from 1 to {MAX_AUDIT_PAGE}")
    rows = _order().orders.page_after(after, int(limit) + 1, horizon_arg())
    page = rows[: int(limit)]
    items = [
        {
            "order_id": r["order_id"],
            "status": r["status"],
            "stale": r["stale"],
            "parts": order_parts(r) if r["gtid"] else {},
        }
        for r in page
    ]
    more = len(rows) > len(page)
    return jsonify({"items": items, "next": page[-1]["order_id"] if more else None})


def settle_from_message(conn: Connection, event: dict[str, Any], routing_key: str) -> None:
    """msg mode: the coordinator's settlement of an order arrives through the broker (one
    that never does is asked for by the reconciler)."""
    gtid, status, reason = event.get("gtid"), event.get("status"), event.get("reason")
    if not isinstance(gtid, str) or status not in ("confirmed", "failed"):
        raise PoisonMessage("a settlement needs a gtid and a status: confirmed or failed")
    if status == "confirmed":
        settle_pending_order(conn, gtid, "confirmed", None)
    else:
        settle_pending_order(conn, gtid, "failed", reason if isinstance(reason, str) else "aborted")


def render_order(conn: Connection, order_id: str) -> dict[str, Any] | None:
    row = run(
        conn, f"SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = :id", {"id": order_id}
    ).first()
    return order_body(dict(row._mapping)) if row else None


class OrderComponent(Component):
    """The order service: placement, reconciliation, notification, its outbox and inbox."""

    def __init__(self, settings: Settings) -> None:
        super().__init__("order", settings)
        self.db = Database(make_engine(settings.db_urls["order"]))
        self.faults = make_faults("order", settings)
        self.orders = OrderRepository(self.db, settings.lock_timeout_ms)
        self.credentials = Credentials(self.db)
        self.coordinator = component_client(settings, "coordinator", settings.http_timeout_s)
        self.naive_pool = (
            ThreadPoolExecutor(max_workers=64, thread_name_prefix="naive")
            if settings.naive_mode
            else None
        )
        self.placement = OrderPlacement(
            self.orders,
            self.coordinator,
            PriceBook(
                component_client(settings, "inventory", settings.http_timeout_s),
                settings.price_ttl_s,
            ),
            component_client(settings, "coupon", settings.http_timeout_s),
            settings.txn_timeout_s,
            self.faults,
            settings.notify_allowed_hosts,
            NaiveParts.of(settings, self.naive_pool) if self.naive_pool is not None else None,
            threepc=settings.threepc_mode,
        )
        self.reconciler = PendingOrderReconciler(
            self.orders,
            self.coordinator,
            settings.recovery_horizon_s,
            settings.msg_resend_s,
            Leases(self.db, new_owner()),
            faults=self.faults,
        )
        self.notifier = Notifier(
            self.db, render_order, settings.notify_schedule_s, settings.notify_allowed_hosts
        )
        self.retention = protocol_retention("order", settings, self.db, NOTIFICATION_RULES)

    def register(self, app: Flask) -> None:
        app.extensions["paxmart.gauges"] = [
            outbox_probe(self.name, self.db),
            self.retention.probe(),
        ]
        app.extensions["paxmart.retention"] = self.retention
        app.register_blueprint(orders_bp)
        app.register_blueprint(leftovers_blueprint(self.db))
        serve_dead_letters(app, self.name, dead_letter_store(self.settings, self.db))

    def background(self) -> list[Background]:
        interval = self.settings.recovery_interval_s
        return [
            Loop("order-reconciler", self.reconciler.run_once, interval),
            Loop("order-notifier", self.notifier.run_once, NOTIFY_POLL_S),
            Loop("order-retention", self.retention.run_once, self.settings.retention_interval_s),
            *messaging_work(
                "order", self.settings, self.db, self.faults, SETTLEMENTS_QUEUE, settle_from_message
            ),
        ]

    def close(self) -> None:
        if self.naive_pool is not None:
            self.naive_pool.shutdown(wait=False)
        self.db.dispose()


COMPONENT = ComponentSpec(
    "order",
    OrderComponent,
    (*PARTICIPANT_MIGRATIONS, LEASE_SQL, Path(__file__).resolve().parent / "migrations"),
)


def create_app(settings: Settings | None = None) -> Flask:
    return web_app(OrderComponent(settings or load_settings()))
