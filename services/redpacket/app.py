"""Red packet: cash-voucher wallets. Its 2PC branch debits the order's red packet."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, current_app, jsonify
from sqlalchemy import Connection, text

from paxkit.config import Settings, load_settings
from paxkit.errors import NotFound
from paxkit.participant import ParticipantSpec, create_participant_app, db_of
from paxkit.validation import validate_user_id
from paxkit.xa import Rejected


def debit_wallet(conn: Connection, payload: dict[str, Any]) -> None:
    """XA action: spend the red packet from the wallet, or reject when it can't cover it."""
    params = {
        "order_id": payload["order_id"],
        "gtid": payload["gtid"],
        "user_id": payload["user_id"],
        "amount": payload["amount_cents"],
    }
    debited = conn.execute(
        text(
            "UPDATE wallets SET balance_cents = balance_cents - :amount, "
            "spent_cents = spent_cents + :amount, updated_at = now() "
            "WHERE user_id = :user_id AND balance_cents >= :amount RETURNING user_id"
        ),
        params,
    ).scalar()
    if debited is None:
        raise Rejected("insufficient_balance")
    conn.execute(
        text(
            "INSERT INTO wallet_holds (order_id, user_id, amount_cents, state, gtid) "
            "VALUES (:order_id, :user_id, :amount, 'spent', :gtid)"
        ),
        params,
    )


reads = Blueprint("redpacket_reads", __name__)


@reads.get("/users/<user_id>/wallet")
def get_wallet(user_id: str) -> Any:
    row = db_of(current_app).fetch_one(
        "SELECT user_id, balance_cents, frozen_cents FROM wallets WHERE user_id = :user_id",
        user_id=validate_user_id(user_id),
    )
    if row is None:
        raise NotFound(f"User {user_id} has no wallet.", code="user_not_found")
    return jsonify(row)


SPEC = ParticipantSpec(name="redpacket", xa_action=debit_wallet, reads=reads)


def create_app(settings: Settings | None = None) -> Flask:
    return create_participant_app(SPEC, settings or load_settings())
