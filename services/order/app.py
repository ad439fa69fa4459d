"""Order service: creates orders and runs each as a global transaction at the coordinator.

It is also a 2PC participant: its branch confirms the pending order, its rollback fails it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify, request
from sqlalchemy import Connection, text

from paxkit.app import make_faults
from paxkit.audit import horizon_arg, leftovers_blueprint
from paxkit.background import Loop
from paxkit.barrier import query_prepared
from paxkit.component import Background, Component, ComponentSpec
from paxkit.config import Settings, load_settings
from paxkit.db import Database, make_engine
from paxkit.errors import InvalidInput, NotFound
from paxkit.http import ServiceClient
from paxkit.messaging import SETTLEMENTS_QUEUE
from paxkit.notify import Notifier
from paxkit.participant import ParticipantComponent, ParticipantSpec, db_of
from paxkit.requests_json import json_body
from paxkit.runtime import messaging_work
from paxkit.schema import PARTICIPANT_MIGRATIONS
from paxkit.validation import validate_gtid, validate_user_id
from paxkit.web import create_app as web_app
from paxkit.xa import Rejected
from services.order.placement import OrderPlacement, order_parts
from services.order.reconcile import PendingOrderReconciler
from services.order.repository import (
    ORDER_COLUMNS,
    OrderRepository,
    confirm_pending_order,
    fail_pending_order,
    order_body,
)

MAX_LIST = 100
MAX_AUDIT_PAGE = 1000
NOTIFY_POLL_S = 0.2


def confirm_order(conn: Connection, payload: dict[str, Any]) -> None:
    """XA action: the order becomes confirmed, unless it is no longer pending."""
    if not confirm_pending_order(conn, payload):
        raise Rejected("aborted")


def fail_order(conn: Connection, gtid: str, reason: str) -> None:
    """XA abort hook: the pending order fails with the transaction's reason."""
    fail_pending_order(conn, gtid, reason)


orders_bp = Blueprint("orders", __name__)


def _placement() -> OrderPlacement:
    placement: OrderPlacement = current_app.extensions["paxmart.placement"]
    return placement


@orders_bp.post("/orders")
def place_order() -> Any:
    respond_async = "respond-async" in request.headers.get("Prefer", "")
    placed = _placement().place(json_body(), respond_async=respond_async)
    return jsonify(placed.body), placed.status, placed.headers


@orders_bp.post("/msg/<gtid>/query")
def query_prepared_message(gtid: str) -> Any:
    """The coordinator's check-back for a prepared message (DTM's QueryPrepared)."""
    committed = query_prepared(db_of(current_app), validate_gtid(gtid), "order")
    return jsonify({"gtid": gtid, "committed": committed})


@orders_bp.get("/orders/<order_id>")
def get_order(order_id: str) -> Any:
    row = OrderRepository(db_of(current_app)).get(order_id)
    if row is None:
        raise NotFound(f"No order {order_id!r}.", code="order_not_found")
    return jsonify(order_body(row))


@orders_bp.get("/users/<user_id>/orders")
def list_orders(user_id: str) -> Any:
    limit = request.args.get("limit", str(MAX_LIST))
    if not limit.isdigit() or not 1 <= int(limit) <= MAX_LIST:
        raise InvalidInput("limit", f"limit must be an integer from 1 to {MAX_LIST}")
    rows = OrderRepository(db_of(current_app)).for_user(validate_user_id(user_id), int(limit))
    return jsonify({"items": [order_body(r) for r in rows]})


@orders_bp.get("/audit/orders")
def audit_orders() -> Any:
    """The initiator's side of the audit: a page of orders (by id), each with the part every
    participant should hold, and whether a pending one is older than the horizon."""
    after = request.args.get("after", "")
    limit = request.args.get("limit", str(MAX_AUDIT_PAGE))
    if not (limit.isascii() and limit.isdigit()) or not 1 <= int(limit) <= MAX_AUDIT_PAGE:
        raise InvalidInput("limit", f"limit must be an integer from 1 to {MAX_AUDIT_PAGE}")
    rows = OrderRepository(db_of(current_app)).page_after(after, int(limit) + 1, horizon_arg())
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


SPEC = ParticipantSpec(name="order", xa_action=confirm_order, reads=orders_bp, on_abort=fail_order)


def settle_from_message(conn: Connection, event: dict[str, Any], routing_key: str) -> None:
    """msg mode: the coordinator's settlement of an order arrives through the broker."""
    if event["status"] == "confirmed":
        confirm_pending_order(conn, event)
    else:
        fail_pending_order(conn, event["gtid"], event.get("reason") or "aborted")


def render_order(conn: Connection, order_id: str) -> dict[str, Any] | None:
    row = conn.execute(
        text(f"SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = :id"), {"id": order_id}
    ).first()
    return order_body(dict(row._mapping)) if row else None


class OrderComponent(Component):
    """The order service: placement, its own 2PC branch, reconciliation, notification."""

    def __init__(self, settings: Settings) -> None:
        super().__init__("order", settings)
        self.db = Database(make_engine(settings.db_urls["order"]))
        self.faults = make_faults("order", settings)
        self.branch = ParticipantComponent(SPEC, settings, self.db)
        self.orders = OrderRepository(self.db)
        self.coordinator = ServiceClient(
            "coordinator", settings.urls["coordinator"], settings.http_timeout_s
        )
        self.placement = OrderPlacement(
            self.orders,
            self.coordinator,
            ServiceClient("inventory", settings.urls["inventory"], settings.http_timeout_s),
            ServiceClient("coupon", settings.urls["coupon"], settings.http_timeout_s),
            settings.txn_timeout_s,
            self.faults,
            settings.notify_allowed_hosts,
        )
        self.reconciler = PendingOrderReconciler(
            self.orders, self.coordinator, settings.recovery_horizon_s
        )
        self.notifier = Notifier(
            self.db, render_order, settings.notify_schedule_s, settings.notify_allowed_hosts
        )

    def register(self, app: Flask) -> None:
        self.branch.register(app)
        app.register_blueprint(leftovers_blueprint(self.db))
        app.extensions["paxmart.placement"] = self.placement

    def background(self) -> list[Background]:
        interval = self.settings.recovery_interval_s
        return [
            Loop("order-reconciler", self.reconciler.run_once, interval),
            Loop("order-notifier", self.notifier.run_once, NOTIFY_POLL_S),
            *messaging_work(
                "order", self.settings, self.db, self.faults, SETTLEMENTS_QUEUE, settle_from_message
            ),
        ]

    def close(self) -> None:
        self.db.dispose()


COMPONENT = ComponentSpec(
    "order",
    OrderComponent,
    (*PARTICIPANT_MIGRATIONS, Path(__file__).resolve().parent / "migrations"),
)


def create_app(settings: Settings | None = None) -> Flask:
    return web_app(OrderComponent(settings or load_settings()))
