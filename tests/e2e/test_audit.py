"""The audit combines every service's own answers, and it can fail: break one ledger
behind the services' backs and the audit names the order and the check."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text

from paxkit.db import Database

SKU = "SKU-0042"


def checks(audit: dict) -> set[tuple[str, str | None]]:
    return {(v["check"], v.get("order_id") or v.get("sku")) for v in audit["violations"]}


@pytest.fixture
def confirmed(api, user) -> str:
    response = api.order({"user_id": user, "items": [{"sku": SKU, "qty": 1}], "mode": "tcc"})
    assert response.status_code == 201, response.text
    return str(response.json()["order_id"])


@pytest.fixture
def released_behind_the_back(dbs: dict[str, Database], confirmed: str) -> Iterator[str]:
    """The order's stock movement says released while the product still counts it sold."""
    move = "UPDATE stock_movements SET state = :state WHERE order_id = :id"
    with dbs["inventory"].transaction() as conn:
        conn.execute(text(move), {"state": "released", "id": confirmed})
    yield confirmed
    with dbs["inventory"].transaction() as conn:
        conn.execute(text(move), {"state": "sold", "id": confirmed})


def test_a_confirmed_order_whose_stock_effect_vanished_is_reported(api, released_behind_the_back):
    found = checks(api.audit())
    assert ("confirmed_order_incomplete", released_behind_the_back) in found
    assert ("stock_ledger", SKU) in found


def test_an_effect_of_an_order_that_does_not_exist_is_reported(api, dbs, user):
    ghost = "ord-ffffffffffffffffffff"
    coupon = f"C-{user}-1"
    claim = "UPDATE coupons SET status = :s, order_id = :o, gtid = :o WHERE coupon_id = :c"
    with dbs["coupon"].transaction() as conn:
        conn.execute(text(claim), {"s": "used", "o": ghost, "c": coupon})
    try:
        assert ("effect_without_order", ghost) in checks(api.audit())
    finally:
        with dbs["coupon"].transaction() as conn:
            conn.execute(text(claim), {"s": "available", "o": None, "c": coupon})


def test_the_audit_is_clean_again_once_the_ledgers_are_restored(api, confirmed):
    audit = api.audit()
    assert audit["ok"], audit["violations"]
    assert audit["checked"]["skus"] == 100 and audit["checked"]["wallets"] == 1000
