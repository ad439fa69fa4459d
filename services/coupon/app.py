"""Coupon: users' coupons. Its 2PC branch marks the order's coupon used."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, current_app, jsonify
from sqlalchemy import Connection, text

from paxkit.config import Settings, load_settings
from paxkit.errors import NotFound
from paxkit.participant import ParticipantSpec, create_participant_app, db_of
from paxkit.validation import validate_user_id
from paxkit.xa import Rejected

COUPON_COLUMNS = "coupon_id, user_id, discount_cents, min_spend_cents, status"


def use_coupon(conn: Connection, payload: dict[str, Any]) -> None:
    """XA action: the coupon goes from available to used by this order, or the order fails."""
    used = conn.execute(
        text(
            "UPDATE coupons SET status = 'used', order_id = :order_id, gtid = :gtid, "
            "updated_at = now() WHERE coupon_id = :coupon_id AND user_id = :user_id "
            "AND status = 'available' AND min_spend_cents <= :total RETURNING coupon_id"
        ),
        {
            "order_id": payload["order_id"],
            "gtid": payload["gtid"],
            "coupon_id": payload["coupon_id"],
            "user_id": payload["user_id"],
            "total": payload["total_cents"],
        },
    ).scalar()
    if used is None:
        raise Rejected("coupon_unavailable")


reads = Blueprint("coupon_reads", __name__)


@reads.get("/users/<user_id>/coupons")
def list_coupons(user_id: str) -> Any:
    rows = db_of(current_app).fetch_all(
        "SELECT coupon_id, discount_cents, min_spend_cents, status FROM coupons "
        "WHERE user_id = :user_id ORDER BY coupon_id",
        user_id=validate_user_id(user_id),
    )
    return jsonify({"items": rows})


@reads.get("/coupons/<coupon_id>")
def get_coupon(coupon_id: str) -> Any:
    row = db_of(current_app).fetch_one(
        f"SELECT {COUPON_COLUMNS} FROM coupons WHERE coupon_id = :coupon_id", coupon_id=coupon_id
    )
    if row is None:
        raise NotFound(f"No coupon {coupon_id!r}.", code="coupon_not_found")
    return jsonify(row)


SPEC = ParticipantSpec(name="coupon", xa_action=use_coupon, reads=reads)


def create_app(settings: Settings | None = None) -> Flask:
    return create_participant_app(SPEC, settings or load_settings())
