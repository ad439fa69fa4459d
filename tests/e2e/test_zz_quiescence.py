"""Last: at quiescence nothing is left prepared, frozen or pending, and the audit is clean."""

from __future__ import annotations

from functools import partial

from tests.e2e.conftest import ADMIN
from tests.helpers import wait_until


def test_no_prepared_transaction_is_left(dbs):
    wait_until(
        lambda: not dbs["coordinator"].fetch_all("SELECT gid FROM pg_prepared_xacts"),
        timeout_s=30,
        what="pg_prepared_xacts to be empty",
    )


def test_no_order_is_left_pending(dbs):
    wait_until(
        lambda: not dbs["order"].fetch_all("SELECT order_id FROM orders WHERE status = 'pending'"),
        timeout_s=30,
        what="every order settled",
    )


def test_nothing_is_left_frozen_or_reserved(dbs):
    assert dbs["inventory"].fetch_one("SELECT sum(frozen) AS n FROM products") == {"n": 0}
    assert dbs["redpacket"].fetch_one("SELECT sum(frozen_cents) AS n FROM wallets") == {"n": 0}
    assert dbs["coupon"].fetch_one(
        "SELECT count(*) AS n FROM coupons WHERE status = 'reserved'"
    ) == {"n": 0}


def test_every_event_was_relayed(dbs):
    for name in ("coordinator", "order", "inventory", "coupon", "redpacket"):
        wait_until(
            partial(
                lambda n: (
                    dbs[n].fetch_one("SELECT count(*) AS n FROM outbox WHERE sent_at IS NULL")
                    == {"n": 0}
                ),
                name,
            ),
            timeout_s=30,
            what=f"the {name} outbox to drain",
        )


def test_every_transaction_finished(dbs):
    """Recovery finishes what a test left in flight once its lease runs out."""
    wait_until(
        lambda: (
            not dbs["coordinator"].fetch_all(
                "SELECT gtid, status FROM global_txns WHERE status NOT IN ('committed', 'aborted')"
            )
        ),
        timeout_s=30,
        what="every transaction to finish",
    )


def test_no_message_is_left_dead(api):
    letters = api.get("/admin/dead-letters", headers=ADMIN).json()
    assert (letters["total"], letters["unavailable"]) == (0, []), letters["items"]


def test_audit_is_clean(api):
    audit = api.audit()
    assert audit["ok"], audit["violations"]
    assert audit["checked"]["orders"] > 0
    assert audit["checked"]["skus"] == 100
