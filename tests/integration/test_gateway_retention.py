"""Idempotency-Key records are pruned once unused past the horizon, never while claimed."""

from __future__ import annotations

from sqlalchemy import text

from gateway.app import RETENTION_RULES
from paxkit.retention import Retention

HORIZON_S = 3600.0


def add_key(db, key: str, age_s: float, claimed_for_s: float | None) -> None:
    with db.transaction() as conn:
        conn.execute(
            text(
                "INSERT INTO idempotency_keys (key, body_hash, order_id, owner, claimed_until, "
                "created_at, updated_at) VALUES (:key, 'h', :order, :owner, "
                "now() + make_interval(secs => CAST(:claim AS float8)), "
                "now() - make_interval(secs => :age), now() - make_interval(secs => :age))"
            ),
            {
                "key": key,
                "order": f"ord-{key}",
                "owner": None if claimed_for_s is None else "gw-1",
                "claim": claimed_for_s,
                "age": age_s,
            },
        )


def keys(db) -> set[str]:
    return {r["key"] for r in db.fetch_all("SELECT key FROM idempotency_keys")}


def test_old_keys_go_and_recent_or_claimed_ones_stay(gateway_db):
    with gateway_db.transaction() as conn:
        conn.execute(text("DELETE FROM idempotency_keys"))
    add_key(gateway_db, "old", 2 * HORIZON_S, None)
    add_key(gateway_db, "recent", 60, None)
    add_key(gateway_db, "old-but-claimed", 2 * HORIZON_S, 30)
    add_key(gateway_db, "old-claim-lapsed", 2 * HORIZON_S, -30)

    pruned = Retention("gateway", gateway_db, RETENTION_RULES, HORIZON_S).run_once()

    assert pruned == {"idempotency_keys": 2}
    assert keys(gateway_db) == {"recent", "old-but-claimed"}
