"""The chaos checker's verdict on fake rows: a consistent world passes, each kind of
damage is named."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from infra.chaos.checker import AuditAnswer, Seed, Snapshot, check, compared, stuck
from infra.chaos.history import Op

SEED = Seed(stock={"SKU-0001": 10, "SKU-0002": 10}, balance={1: 1000, 2: 1000})


def order(order_id: str, status: str, **extra: Any) -> dict[str, Any]:
    row = {
        "order_id": order_id,
        "user_id": 1,
        "status": status,
        "items": [{"sku": "SKU-0001", "qty": 2, "price_cents": 100}],
        "coupon_id": None,
        "discount_cents": 0,
        "red_packet_cents": 50,
        "gtid": f"gtx-{order_id}",
    }
    return {**row, **extra}


def op(key: str, status: int | None, order_id: str | None, order_status: str | None) -> Op:
    return Op(key, "order", "2pc", "s", 0.0, 1.0, status, None, order_id, order_status)


@pytest.fixture
def world() -> Snapshot:
    """o1 confirmed (2 units, 50 cents, coupon C-1-1), o2 failed (nothing left of it)."""
    return Snapshot(
        products=[
            {"sku": "SKU-0001", "available": 8, "frozen": 0, "sold": 2},
            {"sku": "SKU-0002", "available": 10, "frozen": 0, "sold": 0},
        ],
        movements=[
            {"order_id": "o1", "sku": "SKU-0001", "qty": 2, "state": "sold"},
            {"order_id": "o2", "sku": "SKU-0001", "qty": 1, "state": "released"},
        ],
        coupons=[
            {"coupon_id": "C-1-1", "status": "used", "order_id": "o1"},
            {"coupon_id": "C-1-2", "status": "available", "order_id": None},
        ],
        wallets=[
            {"user_id": 1, "balance_cents": 950, "frozen_cents": 0, "spent_cents": 50},
            {"user_id": 2, "balance_cents": 1000, "frozen_cents": 0, "spent_cents": 0},
        ],
        holds=[
            {"order_id": "o1", "user_id": 1, "amount_cents": 50, "state": "spent"},
            {"order_id": "o2", "user_id": 1, "amount_cents": 50, "state": "refunded"},
        ],
        orders=[
            order("o1", "confirmed", coupon_id="C-1-1", discount_cents=500),
            order("o2", "failed"),
        ],
        txns=[{"gtid": "gtx-o1", "status": "committed"}, {"gtid": "gtx-o2", "status": "aborted"}],
        keys=[{"key": "k1", "order_id": "o1", "status": 201}, {"key": "k2", "order_id": "o2"}],
        prepared={"inventory": 0},
        unsent={"order": 0},
        dead_letters={"coupon": 0},
    )


def checks(snap: Snapshot, ops: list[Op] | None = None) -> list[str]:
    return sorted({v.check for v in check(SEED, snap, ops or []).violations})


def test_a_consistent_world_has_no_violation(world: Snapshot) -> None:
    ops = [op("k1", 201, "o1", "confirmed"), op("k2", 409, "o2", "failed")]
    assert checks(world, ops) == []
    assert stuck(world) == {}


def test_lost_stock_breaks_conservation(world: Snapshot) -> None:
    world.products[0]["available"] = 7
    assert checks(world) == ["stock_not_conserved"]


def test_frozen_stock_and_money_are_left_holds(world: Snapshot) -> None:
    world.products[1].update(available=9, frozen=1)
    world.wallets[1].update(balance_cents=990, frozen_cents=10)
    assert checks(world) == ["money_frozen_left", "stock_frozen_left"]
    assert stuck(world) == {"frozen_skus": 1, "frozen_wallets": 1}


def test_money_spent_by_no_confirmed_order(world: Snapshot) -> None:
    world.wallets[1].update(balance_cents=900, spent_cents=100)
    assert checks(world) == ["money_not_conserved", "money_spent_mismatch"]


def test_a_failed_order_with_an_effect(world: Snapshot) -> None:
    world.holds[1]["state"] = "spent"
    assert "failed_order_with_effects" in checks(world)


def test_a_confirmed_order_missing_an_effect(world: Snapshot) -> None:
    world.holds[0]["state"] = "refunded"
    assert "confirmed_order_incomplete" in checks(world)


def test_coupon_not_used_by_its_confirmed_order(world: Snapshot) -> None:
    world.coupons[0].update(status="available", order_id=None)
    assert checks(world) == ["coupon_not_used_by_its_order"]


def test_a_reserved_coupon_is_held_wrongly(world: Snapshot) -> None:
    world.coupons[1].update(status="reserved", order_id="o2")
    assert checks(world) == ["coupon_held_wrongly", "failed_order_with_effects"]
    assert stuck(world) == {"reserved_coupons": 1}


def test_pending_orders_and_unfinished_transactions(world: Snapshot) -> None:
    world.orders.append(order("o3", "pending", red_packet_cents=0, items=[]))
    world.keys.append({"key": "k3", "order_id": "o3"})
    world.txns.append({"gtid": "gtx-o3", "status": "preparing"})
    assert checks(world) == ["order_pending", "transaction_unfinished"]
    assert stuck(world) == {"pending_orders": 1, "unfinished_txns": 1}


def test_confirmed_order_needs_a_committed_transaction(world: Snapshot) -> None:
    world.txns[0]["status"] = "aborted"
    world.txns[1]["status"] = "committed"
    assert checks(world) == ["confirmed_without_commit", "failed_but_committed"]


def test_what_a_client_was_told_holds(world: Snapshot) -> None:
    told = [op("k2", 201, "o2", "confirmed"), op("k1", 409, "o1", "failed")]
    assert checks(world, told) == ["confirmed_answer_lost", "failed_answer_but_confirmed"]


def test_one_key_never_two_orders(world: Snapshot) -> None:
    replies = [op("k1", 201, "o1", "confirmed"), op("k1", 202, "o9", "pending")]
    assert checks(world, replies) == ["key_two_orders"]


def test_an_order_no_request_placed(world: Snapshot) -> None:
    world.keys.pop()
    assert checks(world) == ["order_without_request"]


def test_effects_of_an_unknown_order(world: Snapshot) -> None:
    world.movements.append({"order_id": "ghost", "sku": "SKU-0002", "qty": 1, "state": "frozen"})
    world.products[1].update(available=9, frozen=1)
    assert "effect_without_order" in checks(world)


def test_leftovers_anywhere_are_violations(world: Snapshot) -> None:
    damaged = dataclasses.replace(
        world, prepared={"inventory": 1}, unsent={"order": 2}, dead_letters={"coupon": 1}
    )
    assert checks(damaged) == ["dead_letters", "outbox_unsent", "prepared_xacts_left"]
    assert stuck(damaged) == {"prepared_xacts": 1, "unsent_outbox": 2}


def test_info_outcomes_resolve_through_the_key_records(world: Snapshot) -> None:
    ops = [op("k1", 504, None, None), op("k2", None, None, None), op("k9", 503, None, None)]
    verdict = check(SEED, world, ops)
    assert verdict.violations == []
    assert verdict.info == {"confirmed": 1, "failed": 1, "absent": 1}


def test_the_audit_must_answer_and_agree(world: Snapshot) -> None:
    clean = check(SEED, world, [])
    assert compared(clean, AuditAnswer(200, True, [])) == []
    assert [v.check for v in compared(clean, AuditAnswer(503, False, []))] == ["audit_unavailable"]
    assert [v.check for v in compared(clean, AuditAnswer(200, False, [{}]))] == ["audit_disagrees"]


def test_the_seed_is_what_the_databases_held(world: Snapshot) -> None:
    assert Seed.of(world) == Seed({"SKU-0001": 10, "SKU-0002": 10}, {1: 1000, 2: 1000})
