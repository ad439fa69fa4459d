"""The naive baseline against real Postgres: a part applied in one local transaction with no
protocol rows, a rejection that leaves nothing, no dedupe of a repeated part, the route
served only where enabled, and the reconciler leaving naive orders alone.

Each runs on a scratch copy of the service's database, so counts can be asserted exactly.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import pytest

from paxkit.barrier import Outcome
from paxkit.config import Settings
from paxkit.db import Database
from paxkit.naive import NaiveBranch
from services.coupon.app import SPEC as COUPON
from services.inventory.app import SPEC as INVENTORY
from services.inventory.app import create_app as inventory_app
from services.order.repository import OrderRepository
from tests.helpers import pending_order

_ids = itertools.count(1)
SKU = "SKU-0007"


@pytest.fixture(scope="module")
def stock_db(scratch_db) -> Database:
    return scratch_db("inventory")


@pytest.fixture(scope="module")
def coupon_db(scratch_db) -> Database:
    return scratch_db("coupon")


@pytest.fixture(scope="module")
def order_db(scratch_db) -> Database:
    return scratch_db("order")


def new_gtid() -> str:
    return f"it-naive-{next(_ids)}"


def stock_part(gtid: str, qty: int) -> dict[str, Any]:
    return {"order_id": f"o-{gtid}", "items": [{"sku": SKU, "qty": qty}]}


def stock(db: Database) -> dict[str, Any]:
    row = db.fetch_one("SELECT available, frozen, sold FROM products WHERE sku = :s", s=SKU)
    assert row is not None
    return row


def protocol_rows(db: Database) -> int:
    row = db.fetch_one(
        "SELECT (SELECT count(*) FROM barrier) + (SELECT count(*) FROM xa_branch_log) AS n"
    )
    return int(row["n"]) if row else -1


def test_a_part_is_its_xa_action_committed_with_no_protocol_row(stock_db):
    branch = NaiveBranch("inventory", stock_db, INVENTORY.xa_action, 500)
    gtid, start = new_gtid(), stock(stock_db)
    assert branch.apply(gtid, stock_part(gtid, 3)).as_json() == {
        "ok": True,
        "effect": "applied",
        "reason": None,
    }
    assert stock(stock_db) == {**start, "available": start["available"] - 3, "sold": 3}
    moved = stock_db.fetch_all("SELECT state, qty FROM stock_movements WHERE gtid = :g", g=gtid)
    assert moved == [{"state": "sold", "qty": 3}]
    assert protocol_rows(stock_db) == 0
    assert stock_db.fetch_all("SELECT gid FROM pg_prepared_xacts") == []


def test_a_rejected_part_leaves_nothing_and_answers_its_reason(stock_db):
    branch = NaiveBranch("inventory", stock_db, INVENTORY.xa_action, 500)
    gtid, start = new_gtid(), stock(stock_db)
    outcome = branch.apply(gtid, stock_part(gtid, start["available"] + 1))
    assert (outcome.ok, outcome.effect, outcome.reason) == (False, "rejected", "out_of_stock")
    assert stock(stock_db) == start
    assert stock_db.fetch_all("SELECT 1 FROM stock_movements WHERE gtid = :g", g=gtid) == []


def test_a_repeated_call_is_deduped_by_nothing_but_the_ledgers_key(stock_db):
    """No protocol row answers `duplicate`: a part sent twice is stopped only by the
    ledger's own key per order, as a refusal, which is why the initiator never retries.
    (Once an IntegrityError that answered 500, found by the schema fuzzer.)"""
    branch = NaiveBranch("inventory", stock_db, INVENTORY.xa_action, 500)
    gtid = new_gtid()
    assert branch.apply(gtid, stock_part(gtid, 2)).ok
    start = stock(stock_db)
    assert branch.apply(gtid, stock_part(gtid, 2)) == Outcome(False, "rejected", "aborted")
    assert stock(stock_db) == start


def test_a_coupon_is_used_once_and_then_unavailable(coupon_db):
    branch = NaiveBranch("coupon", coupon_db, COUPON.xa_action, 500)
    first, second = new_gtid(), new_gtid()
    part = {"coupon_id": "C-3-1", "user_id": 3, "total_cents": 5000}
    assert branch.apply(first, {**part, "order_id": f"o-{first}"}).ok
    refused = branch.apply(second, {**part, "order_id": f"o-{second}"})
    assert (refused.ok, refused.reason) == (False, "coupon_unavailable")
    row = coupon_db.fetch_one("SELECT status, gtid FROM coupons WHERE coupon_id = 'C-3-1'")
    assert row == {"status": "used", "gtid": first}


def test_the_reconciler_never_picks_a_naive_order(order_db):
    """No coordinator knows a naive order's outcome: left pending, it stays so (the audit
    reports it) instead of being checked back at the coordinator again and again."""
    orders = OrderRepository(order_db)
    for order_id, mode in (("it-naive-pending", "naive"), ("it-2pc-pending", "2pc")):
        assert orders.insert(pending_order(order_id, mode)) is not None
    with order_db.transaction() as conn:
        conn.exec_driver_sql("UPDATE orders SET created_at = now() - interval '1 hour'")
    assert [o["order_id"] for o in orders.stale_pending(60, 10)] == ["it-2pc-pending"]


def test_a_participant_serves_the_route_only_where_the_stack_enables_it(fresh_databases):
    def routes(settings: Settings) -> set[str]:
        return {rule.rule for rule in inventory_app(settings).url_map.iter_rules()}

    assert "/naive/apply" not in routes(fresh_databases)
    assert "/naive/apply" in routes(dataclasses.replace(fresh_databases, naive_mode=True))
