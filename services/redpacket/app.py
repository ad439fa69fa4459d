"""Red packet: cash-voucher wallets. Its 2PC branch debits the order's red packet."""

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
from paxkit.validation import validate_user_id
from paxkit.xa import Rejected

# Where a hold's money sits, by the state of the hold.
WALLET_COLUMN = {"frozen": "frozen_cents", "spent": "spent_cents", "refunded": "balance_cents"}


def hold_money(conn: Connection, payload: dict[str, Any], state: str) -> None:
    """Move the red packet out of the balance (into `state`), or reject when it can't."""
    column = WALLET_COLUMN[state]
    params = {
        "order_id": payload["order_id"],
        "gtid": payload["gtid"],
        "user_id": payload["user_id"],
        "amount": payload["amount_cents"],
        "state": state,
    }
    held = run(
        conn,
        f"UPDATE wallets SET balance_cents = balance_cents - :amount, "
        f"{column} = {column} + :amount, updated_at = now() "
        "WHERE user_id = :user_id AND balance_cents >= :amount RETURNING user_id",
        params,
    ).scalar()
    if held is None:
        raise Rejected("insufficient_balance")
    run(
        conn,
        "INSERT INTO wallet_holds (order_id, user_id, amount_cents, state, gtid) "
        "VALUES (:order_id, :user_id, :amount, :state, :gtid)",
        params,
    )


def move_money(conn: Connection, gtid: str, from_state: str, to_state: str) -> None:
    """Move this transaction's hold from one state to another (confirm, cancel, undo)."""
    source, target = WALLET_COLUMN[from_state], WALLET_COLUMN[to_state]
    moved = run(
        conn,
        "UPDATE wallet_holds SET state = :to, updated_at = now() "
        "WHERE gtid = :gtid AND state = :from RETURNING user_id, amount_cents",
        {"gtid": gtid, "from": from_state, "to": to_state},
    ).all()
    for user_id, amount in moved:
        run(
            conn,
            f"UPDATE wallets SET {source} = {source} - :amount, "
            f"{target} = {target} + :amount, updated_at = now() WHERE user_id = :user_id",
            {"user_id": user_id, "amount": amount},
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


# Per wallet: balance + frozen + spent = initial, and frozen/spent agree with the holds.
LEDGER = Ledger(
    checked="wallets",
    count_sql="SELECT count(*) AS n FROM wallets",
    invariants=(
        Invariant(
            "wallet_conservation",
            "SELECT user_id, initial_cents, balance_cents, frozen_cents, spent_cents FROM wallets "
            "WHERE balance_cents + frozen_cents + spent_cents <> initial_cents "
            "OR balance_cents < 0",
        ),
        Invariant(
            "wallet_ledger",
            "SELECT * FROM (SELECT w.user_id, w.frozen_cents, w.spent_cents, "
            "COALESCE(SUM(h.amount_cents) FILTER (WHERE h.state = 'spent'), 0) AS ledger_spent, "
            "COALESCE(SUM(h.amount_cents) FILTER (WHERE h.state = 'frozen'), 0) AS ledger_frozen "
            "FROM wallets w LEFT JOIN wallet_holds h ON h.user_id = w.user_id GROUP BY w.user_id"
            ") AS t WHERE spent_cents <> ledger_spent OR frozen_cents <> ledger_frozen",
        ),
    ),
    effects_sql=(
        "SELECT order_id, state, 'cents' AS item, amount_cents AS amount FROM wallet_holds"
    ),
    claims=lambda part: {"cents": int(part["amount_cents"])},
)

SPEC = Holding(
    take=hold_money,
    move=move_money,
    held="frozen",
    final="spent",
    released="refunded",
    ledger=LEDGER,
).spec("redpacket", reads)


COMPONENT = participant(SPEC, Path(__file__).resolve().parent / "migrations")


def create_app(settings: Settings | None = None) -> Flask:
    return create_participant_app(SPEC, settings or load_settings())
