"""Coupon: users' coupons. Its 2PC branch marks the order's coupon used."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify
from sqlalchemy import Connection

from paxkit.audit import Invariant, Ledger
from paxkit.config import Settings, load_settings
from paxkit.db import run
from paxkit.errors import NotFound
from paxkit.participant import Holding, create_participant_app, db_of, participant
from paxkit.validation import ID_PATTERN, validate_user_id
from paxkit.xa import Rejected

COUPON_COLUMNS = "coupon_id, user_id, discount_cents, min_spend_cents, status"


def claim_coupon(conn: Connection, payload: dict[str, Any], status: str) -> None:
    """Take an available coupon for this order (as `status`), or the order fails."""
    claimed = run(
        conn,
        "UPDATE coupons SET status = :status, order_id = :order_id, gtid = :gtid, "
        "updated_at = now() WHERE coupon_id = :coupon_id AND user_id = :user_id "
        "AND status = 'available' AND min_spend_cents <= :total RETURNING coupon_id",
        {
            "status": status,
            "order_id": payload["order_id"],
            "gtid": payload["gtid"],
            "coupon_id": payload["coupon_id"],
            "user_id": payload["user_id"],
            "total": payload["total_cents"],
        },
    ).scalar()
    if claimed is None:
        raise Rejected("coupon_unavailable")


def move_coupon(conn: Connection, gtid: str, from_status: str, to_status: str) -> None:
    """Move this transaction's coupon on (confirm) or give it back (cancel, undo)."""
    released = to_status == "available"
    run(
        conn,
        "UPDATE coupons SET status = :to, updated_at = now(), "
        "order_id = CASE WHEN :released THEN NULL ELSE order_id END, "
        "gtid = CASE WHEN :released THEN NULL ELSE gtid END "
        "WHERE gtid = :gtid AND status = :from",
        {"gtid": gtid, "from": from_status, "to": to_status, "released": released},
    )


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
    query = f"SELECT {COUPON_COLUMNS} FROM coupons WHERE coupon_id = :coupon_id"
    known = ID_PATTERN.match(coupon_id)
    row = db_of(current_app).fetch_one(query, coupon_id=coupon_id) if known else None
    if row is None:
        raise NotFound(f"No coupon {coupon_id!r}.", code="coupon_not_found")
    return jsonify(row)


# A coupon is held by at most one order at a time.
LEDGER = Ledger(
    checked="coupons",
    count_sql="SELECT count(*) AS n FROM coupons",
    invariants=(
        Invariant(
            "coupon_per_order",
            "SELECT order_id, count(*) AS n FROM coupons WHERE order_id IS NOT NULL "
            "GROUP BY order_id HAVING count(*) > 1",
        ),
    ),
    effects_sql=(
        "SELECT order_id, status AS state, coupon_id AS item, 1 AS amount FROM coupons "
        "WHERE order_id IS NOT NULL"
    ),
    claims=lambda part: {str(part["coupon_id"]): 1},
)

SPEC = Holding(
    take=claim_coupon,
    move=move_coupon,
    held="reserved",
    final="used",
    released="available",
    ledger=LEDGER,
).spec("coupon", reads)


COMPONENT = participant(SPEC, Path(__file__).resolve().parent / "migrations")


def create_app(settings: Settings | None = None) -> Flask:
    return create_participant_app(SPEC, settings or load_settings())
