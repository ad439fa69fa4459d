"""The order table, and the order's contract representation."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection

from paxkit.db import Database, run
from paxkit.errors import InvalidInput
from paxkit.naive import MODE as NAIVE

ORDER_COLUMNS = (
    "order_id, user_id, mode, status, reason, items, coupon_id, total_cents, discount_cents, "
    "red_packet_cents, payable_cents, gtid, created_at, updated_at"
)
_BODY_KEYS = ORDER_COLUMNS.replace(" ", "").split(",")


class UnknownUser(InvalidInput):
    """400: no such customer; nothing was recorded."""

    def __init__(self, user_id: int) -> None:
        super().__init__("user_id", f"No user {user_id}.", code="unknown_user")


def order_body(row: dict[str, Any]) -> dict[str, Any]:
    """The order as API.md shows it."""
    body = {key: row[key] for key in _BODY_KEYS}
    body["items"] = [
        {"sku": i["sku"], "qty": i["qty"], "price_cents": i["price_cents"]} for i in row["items"]
    ]
    body["created_at"] = row["created_at"].isoformat()
    body["updated_at"] = row["updated_at"].isoformat()
    return body


def insert_order(conn: Connection, order: dict[str, Any]) -> dict[str, Any] | None:
    """Insert a new order in the caller's transaction; returns its stored row, or None when
    an order with its id exists already (placement is idempotent on the order id). The user
    must be a customer, checked by the insert itself (UnknownUser, nothing inserted, if not)."""
    row = run(
        conn,
        "INSERT INTO orders (order_id, gtid, user_id, mode, txn_mode, status, reason, items, "
        "coupon_id, total_cents, discount_cents, red_packet_cents, payable_cents, notify_url) "
        "SELECT :order_id, :gtid, :user_id, :mode, :txn_mode, :status, :reason, "
        "CAST(:items AS jsonb), :coupon_id, :total_cents, :discount_cents, "
        ":red_packet_cents, :payable_cents, :notify_url "
        "WHERE EXISTS (SELECT 1 FROM customers WHERE user_id = :user_id) "
        "ON CONFLICT (order_id) DO NOTHING "
        f"RETURNING {ORDER_COLUMNS}",
        {**order, "items": json.dumps(order["items"])},
    ).first()
    if row is None:
        if _exists(conn, order["order_id"]):
            return None
        raise UnknownUser(order["user_id"])
    if order["status"] != "pending" and order["notify_url"]:
        run(
            conn,
            "INSERT INTO notifications (order_id, url) VALUES (:order_id, :url)",
            {"order_id": order["order_id"], "url": order["notify_url"]},
        )
    return dict(row._mapping)


def _exists(conn: Connection, order_id: str) -> bool:
    """Why an insert came back empty: the order is there already, or its user is unknown."""
    found = run(conn, "SELECT 1 FROM orders WHERE order_id = :id", {"id": order_id})
    return found.first() is not None


class OrderRepository:
    def __init__(self, db: Database, lock_timeout_ms: int = 2000) -> None:
        self.db = db
        self.lock_timeout_ms = lock_timeout_ms

    def insert(self, order: dict[str, Any]) -> dict[str, Any] | None:
        """One statement, committed on its own, unless an order settled up front also queues
        its notification: then both go in one transaction."""
        notifies = order["status"] != "pending" and order["notify_url"]
        with self.db.transaction() if notifies else self.db.autocommit() as conn:
            return insert_order(conn, order)

    def get(self, order_id: str) -> dict[str, Any] | None:
        return self.db.fetch_one(
            f"SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = :order_id", order_id=order_id
        )

    def for_user(self, user_id: int, limit: int) -> list[dict[str, Any]]:
        return self.db.fetch_all(
            f"SELECT {ORDER_COLUMNS} FROM orders WHERE user_id = :user_id "
            "ORDER BY created_at DESC LIMIT :limit",
            user_id=user_id,
            limit=limit,
        )

    def page_after(self, after: str, limit: int, stale_s: float) -> list[dict[str, Any]]:
        """Orders with ids after `after`, in id order (the audit pages through them)."""
        return self.db.fetch_all(
            "SELECT order_id, gtid, user_id, status, items, coupon_id, total_cents, "
            "discount_cents, red_packet_cents, "
            "created_at < now() - make_interval(secs => :stale) AS stale "
            "FROM orders WHERE order_id > :after ORDER BY order_id LIMIT :limit",
            after=after,
            limit=limit,
            stale=stale_s,
        )

    def stale_pending(self, older_than_s: float, limit: int) -> list[dict[str, Any]]:
        """Pending orders older than `older_than_s` that are due for a check, those never
        checked first, each with its age in seconds. A naive order is never one: no
        coordinator knows its outcome, so it stays pending and the audit reports it."""
        return self.db.fetch_all(
            f"SELECT {ORDER_COLUMNS}, txn_mode, "
            "CAST(extract(epoch FROM now() - created_at) AS float8) AS age_s FROM orders "
            "WHERE status = 'pending' AND txn_mode <> :naive "
            "AND created_at < now() - make_interval(secs => :age) "
            "AND coalesce(next_check_at, '-infinity') < now() "
            "ORDER BY next_check_at NULLS FIRST, created_at LIMIT :limit",
            age=older_than_s,
            limit=limit,
            naive=NAIVE,
        )

    def confirm_pending(self, gtid: str) -> bool:
        return self._settle(gtid, "confirmed", None)

    def fail_pending(self, gtid: str, reason: str) -> bool:
        return self._settle(gtid, "failed", reason)

    def _settle(self, gtid: str, status: str, reason: str | None) -> bool:
        """One statement, its own transaction, waiting at most the lock timeout on the row:
        the settlement of an order that has its outcome can always be done later."""
        bounded = f"SET LOCAL lock_timeout = {int(self.lock_timeout_ms)}; "
        with self.db.autocommit() as conn:
            return settle_pending_order(conn, gtid, status, reason, prefix=bounded)


# Settling an order also queues its best-effort notification, in the same transaction.
_SETTLE = (
    "WITH settled AS (UPDATE orders SET status = :status, reason = :reason, updated_at = now() "
    "WHERE gtid = :gtid AND status = 'pending' RETURNING order_id, notify_url), "
    "notified AS (INSERT INTO notifications (order_id, url) SELECT order_id, notify_url "
    "FROM settled WHERE notify_url IS NOT NULL) SELECT order_id FROM settled"
)


def settle_pending_order(
    conn: Connection, gtid: str, status: str, reason: str | None, prefix: str = ""
) -> bool:
    """Confirm or fail the order of this transaction if it is still pending; True when it
    changed."""
    params = {"gtid": gtid, "status": status, "reason": reason}
    return run(conn, prefix + _SETTLE, params).scalar() is not None


def schedule_check(conn: Connection, order_id: str, delay_s: float) -> None:
    """Put a pending order back in the reconciler's line, `delay_s` from now."""
    run(
        conn,
        "UPDATE orders SET next_check_at = now() + make_interval(secs => :d) "
        "WHERE order_id = :id AND status = 'pending'",
        {"id": order_id, "d": delay_s},
    )
