"""Inventory: products and stock. Its 2PC branch deducts stock for an order's items."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify, request
from sqlalchemy import Connection

from paxkit.audit import Invariant, Ledger
from paxkit.config import Settings, load_settings
from paxkit.db import run
from paxkit.errors import InvalidInput, NotFound
from paxkit.participant import Holding, create_participant_app, db_of, participant
from paxkit.validation import SKU_PATTERN, validate_limit, validate_sku
from paxkit.xa import Rejected

PRODUCT_COLUMNS = "sku, name, price_cents, available AS stock"
MAX_SKUS_PER_QUERY = 100


# Where a unit of stock sits, by the state of its movement row.
STOCK_COLUMN = {"frozen": "frozen", "sold": "sold", "released": "available"}


def take_stock(conn: Connection, payload: dict[str, Any], state: str) -> None:
    """Move each item's qty out of available (into `state`), or reject the order."""
    order_id, gtid = payload["order_id"], payload["gtid"]
    column = STOCK_COLUMN[state]
    # Lock rows in one global order (by SKU) so concurrent multi-item orders can't deadlock.
    for item in sorted(payload["items"], key=lambda i: i["sku"]):
        moved = run(
            conn,
            f"UPDATE products SET available = available - :qty, {column} = {column} + :qty, "
            "updated_at = now() WHERE sku = :sku AND available >= :qty RETURNING sku",
            {"sku": item["sku"], "qty": item["qty"]},
        ).scalar()
        if moved is None:
            raise Rejected(_shortage_reason(conn, item["sku"]))
        run(
            conn,
            "INSERT INTO stock_movements (order_id, sku, qty, state, gtid) "
            "VALUES (:order_id, :sku, :qty, :state, :gtid)",
            {
                "order_id": order_id,
                "sku": item["sku"],
                "qty": item["qty"],
                "state": state,
                "gtid": gtid,
            },
        )


def move_stock(conn: Connection, gtid: str, from_state: str, to_state: str) -> None:
    """Move this transaction's units from one state to another (confirm, cancel, undo)."""
    source, target = STOCK_COLUMN[from_state], STOCK_COLUMN[to_state]
    moved = run(
        conn,
        "UPDATE stock_movements SET state = :to, updated_at = now() "
        "WHERE gtid = :gtid AND state = :from RETURNING sku, qty",
        {"gtid": gtid, "from": from_state, "to": to_state},
    ).all()
    for sku, qty in sorted(moved):
        run(
            conn,
            f"UPDATE products SET {source} = {source} - :qty, {target} = {target} + :qty, "
            "updated_at = now() WHERE sku = :sku",
            {"sku": sku, "qty": qty},
        )


def _shortage_reason(conn: Connection, sku: str) -> str:
    exists = run(conn, "SELECT 1 FROM products WHERE sku = :sku", {"sku": sku}).scalar()
    return "out_of_stock" if exists else "unknown_sku"


reads = Blueprint("inventory_reads", __name__)


@reads.get("/products")
def list_products() -> Any:
    skus = request.args.getlist("sku")
    if not skus:
        rows = db_of(current_app).fetch_all(f"SELECT {PRODUCT_COLUMNS} FROM products ORDER BY sku")
        return jsonify({"items": rows})
    if len(skus) > MAX_SKUS_PER_QUERY:
        raise InvalidInput("sku", f"at most {MAX_SKUS_PER_QUERY} SKUs per query")
    rows = db_of(current_app).fetch_all(
        f"SELECT {PRODUCT_COLUMNS} FROM products WHERE sku = ANY(:skus) ORDER BY sku",
        skus=[validate_sku(s, "sku") for s in skus],
    )
    return jsonify({"items": rows})


@reads.get("/products/top")
def top_products() -> Any:
    """Best sellers first: the gateway's recommendations."""
    rows = db_of(current_app).fetch_all(
        f"SELECT {PRODUCT_COLUMNS} FROM products ORDER BY sold DESC, sku LIMIT :limit",
        limit=validate_limit(request.args.get("limit"), 10, MAX_SKUS_PER_QUERY),
    )
    return jsonify({"items": rows})


@reads.get("/products/<sku>")
def get_product(sku: str) -> Any:
    query = f"SELECT {PRODUCT_COLUMNS} FROM products WHERE sku = :sku"
    row = db_of(current_app).fetch_one(query, sku=sku) if SKU_PATTERN.match(sku) else None
    if row is None:
        raise NotFound(f"No product with SKU {sku!r}.", code="product_not_found")
    return jsonify(row)


# Per SKU: available + frozen + sold = initial stock, and frozen/sold agree with the ledger.
LEDGER = Ledger(
    checked="skus",
    count_sql="SELECT count(*) AS n FROM products",
    invariants=(
        Invariant(
            "stock_conservation",
            "SELECT sku, initial_stock, available, frozen, sold FROM products "
            "WHERE available + frozen + sold <> initial_stock OR available < 0",
        ),
        Invariant(
            "stock_ledger",
            "SELECT * FROM (SELECT p.sku, p.frozen, p.sold, "
            "COALESCE(SUM(m.qty) FILTER (WHERE m.state = 'sold'), 0) AS ledger_sold, "
            "COALESCE(SUM(m.qty) FILTER (WHERE m.state = 'frozen'), 0) AS ledger_frozen "
            "FROM products p LEFT JOIN stock_movements m ON m.sku = p.sku GROUP BY p.sku"
            ") AS t WHERE sold <> ledger_sold OR frozen <> ledger_frozen",
        ),
    ),
    effects_sql="SELECT order_id, state, sku AS item, qty AS amount FROM stock_movements",
    claims=lambda part: {str(i["sku"]): int(i["qty"]) for i in part["items"]},
)

SPEC = Holding(
    take=take_stock,
    move=move_stock,
    held="frozen",
    final="sold",
    released="released",
    ledger=LEDGER,
).spec("inventory", reads)


COMPONENT = participant(SPEC, Path(__file__).resolve().parent / "migrations")


def create_app(settings: Settings | None = None) -> Flask:
    return create_participant_app(SPEC, settings or load_settings())
