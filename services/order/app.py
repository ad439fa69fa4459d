"""Order service: creates orders and runs each as a global transaction at the coordinator.

It is also a 2PC participant: its branch confirms the pending order, its rollback fails it.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, current_app, jsonify, request
from sqlalchemy import Connection

from paxkit.background import Loop
from paxkit.config import Settings, load_settings
from paxkit.errors import InvalidInput, NotFound
from paxkit.http import ServiceClient
from paxkit.participant import ParticipantSpec, create_participant_app, db_of
from paxkit.requests_json import json_body
from paxkit.validation import validate_user_id
from paxkit.xa import Rejected
from services.order.placement import OrderPlacement
from services.order.reconcile import PendingOrderReconciler
from services.order.repository import (
    OrderRepository,
    confirm_pending_order,
    fail_pending_order,
    order_body,
)

MAX_LIST = 100


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
    placed = _placement().place(json_body())
    return jsonify(placed.body), placed.status, placed.headers


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


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or load_settings()
    app = create_participant_app(SPEC, settings)
    orders = OrderRepository(db_of(app))
    coordinator = ServiceClient(
        "coordinator", settings.urls["coordinator"], settings.http_timeout_s
    )
    app.extensions["paxmart.placement"] = OrderPlacement(
        orders,
        coordinator,
        ServiceClient("inventory", settings.urls["inventory"], settings.http_timeout_s),
        ServiceClient("coupon", settings.urls["coupon"], settings.http_timeout_s),
        settings.txn_timeout_s,
    )
    reconciler = PendingOrderReconciler(orders, coordinator, settings.recovery_horizon_s)
    app.extensions["paxmart.reconciler"] = reconciler
    if settings.background_enabled:
        app.extensions["paxmart.loops"] = [
            Loop("order-reconciler", reconciler.run_once, settings.recovery_interval_s).start()
        ]
    return app
