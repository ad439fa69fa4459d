"""Order service: creates orders and runs each as a global transaction at the coordinator.

It is also a 2PC participant: its branch confirms the pending order, its rollback fails it.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, current_app, jsonify, request
from sqlalchemy import Connection, text

from paxkit.app import make_faults
from paxkit.background import Loop
from paxkit.barrier import query_prepared
from paxkit.config import Settings, load_settings
from paxkit.deadletters import serve_dead_letters
from paxkit.errors import InvalidInput, NotFound
from paxkit.http import ServiceClient
from paxkit.messaging import SETTLEMENTS_QUEUE, PoisonMessage
from paxkit.notify import Notifier
from paxkit.participant import ParticipantSpec, create_participant_app, db_of
from paxkit.requests_json import json_body
from paxkit.runtime import dead_letter_store, start_messaging
from paxkit.validation import validate_gtid, validate_user_id
from paxkit.xa import Rejected
from services.order.placement import OrderPlacement
from services.order.reconcile import PendingOrderReconciler
from services.order.repository import (
    ORDER_COLUMNS,
    OrderRepository,
    confirm_pending_order,
    fail_pending_order,
    order_body,
)

MAX_LIST = 100
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


SPEC = ParticipantSpec(name="order", xa_action=confirm_order, reads=orders_bp, on_abort=fail_order)


def settle_from_message(conn: Connection, event: dict[str, Any], routing_key: str) -> None:
    """msg mode: the coordinator's settlement of an order arrives through the broker (one
    that never does is asked for by the reconciler)."""
    gtid, status, reason = event.get("gtid"), event.get("status"), event.get("reason")
    if not isinstance(gtid, str) or status not in ("confirmed", "failed"):
        raise PoisonMessage("a settlement needs a gtid and a status: confirmed or failed")
    if status == "confirmed":
        confirm_pending_order(conn, {"gtid": gtid})
    else:
        fail_pending_order(conn, gtid, reason if isinstance(reason, str) else "aborted")


def render_order(conn: Connection, order_id: str) -> dict[str, Any] | None:
    row = conn.execute(
        text(f"SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = :id"), {"id": order_id}
    ).first()
    return order_body(dict(row._mapping)) if row else None


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or load_settings()
    app = create_participant_app(SPEC, settings)
    db = db_of(app)
    orders = OrderRepository(db)
    faults = make_faults("order", settings)
    coordinator = ServiceClient(
        "coordinator", settings.urls["coordinator"], settings.http_timeout_s
    )
    app.extensions["paxmart.placement"] = OrderPlacement(
        orders,
        coordinator,
        ServiceClient("inventory", settings.urls["inventory"], settings.http_timeout_s),
        ServiceClient("coupon", settings.urls["coupon"], settings.http_timeout_s),
        settings.txn_timeout_s,
        faults,
        settings.notify_allowed_hosts,
    )
    reconciler = PendingOrderReconciler(orders, coordinator, settings.recovery_horizon_s)
    notifier = Notifier(db, render_order, settings.notify_schedule_s, settings.notify_allowed_hosts)
    app.extensions["paxmart.reconciler"] = reconciler
    app.extensions["paxmart.notifier"] = notifier
    serve_dead_letters(app, "order", dead_letter_store(settings, db))
    if settings.background_enabled:
        app.extensions["paxmart.loops"] = [
            Loop("order-reconciler", reconciler.run_once, settings.recovery_interval_s).start(),
            Loop("order-notifier", notifier.run_once, NOTIFY_POLL_S).start(),
            *start_messaging("order", settings, db, faults, SETTLEMENTS_QUEUE, settle_from_message),
        ]
    return app
