"""The naive baseline end to end: refused by a stack that does not enable it; where one does,
an order whose parts all apply is confirmed with exactly its effects and audits clean, and
an order with one part rejected is failed with the other parts left applied, which the
audit reports. That half-applied order is why the mode is unsafe and off by default.

The enabled stack is one of this module's own (own ports, databases, Redis db, broker
namespace), because the inconsistency it leaves behind on purpose must not reach the
suite's databases, whose audit the last module requires clean.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from paxkit.config import Settings
from paxkit.db import Database
from tests.conftest import SLOT, TEST_ENV
from tests.e2e.conftest import SERVICE, Api, own_stack_and_database, stack_ports

PREFIX = f"paxmart_test{SLOT or ''}_naive_"
PORT_OFFSET = 70
SKU = "SKU-0100"  # 10000 cents: 20 of them leave room for a red packet above any balance


@dataclass
class NaiveStack:
    api: Api
    coordinator: Database


def naive_env() -> dict[str, str]:
    return {
        **TEST_ENV,
        **stack_ports(PORT_OFFSET),
        "PAXMART_DB_PREFIX": PREFIX,
        "PAXMART_REDIS_URL": f"redis://127.0.0.1:6379/{12 - SLOT}",
        "PAXMART_NAIVE_MODE": "1",
    }


@pytest.fixture(scope="module")
def naive(fresh_databases: Settings) -> Iterator[NaiveStack]:
    log_dir = fresh_databases.state_dir / "test-logs-naive"
    with own_stack_and_database(naive_env(), log_dir, "coordinator") as (stack, coordinator):
        yield NaiveStack(Api(stack.url("gateway")), coordinator)


def naive_order(user: int, qty: int, coupon: str, red_packet_cents: int) -> dict[str, Any]:
    return {
        "user_id": user,
        "items": [{"sku": SKU, "qty": qty}],
        "coupon_id": coupon,
        "red_packet_cents": red_packet_cents,
        "mode": "naive",
    }


def balances(api: Api, user: int, coupon: str) -> dict[str, Any]:
    return {
        "stock": api.product(SKU)["stock"],
        "coupon": api.coupon_status(user, coupon),
        **{k: v for k, v in api.wallet(user).items() if k.endswith("_cents")},
    }


def test_a_stack_that_does_not_enable_it_refuses_the_mode_and_serves_no_route(api, stack, user):
    reply = api.order(naive_order(user, 1, f"C-{user}-1", 10))
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert (error["code"], error["field"]) == ("unsupported_mode", "mode")
    assert api.get(f"/api/users/{user}/orders").json()["items"] == []
    direct = requests.post(
        f"{stack.url('inventory')}/naive/apply",
        json={"gtid": "gtx-e2e-naive", "payload": {}},
        headers=SERVICE,
        timeout=10,
    )
    assert direct.status_code == 404


def test_a_naive_order_applies_exactly_its_effects_and_is_confirmed(naive):
    user, coupon, api = 201, "C-201-1", naive.api
    before = balances(api, user, coupon)
    reply = api.order(naive_order(user, 2, coupon, 300))
    assert reply.status_code == 201, reply.text
    order = reply.json()
    assert (order["mode"], order["status"], order["discount_cents"]) == ("naive", "confirmed", 500)
    assert api.get(f"/api/orders/{order['order_id']}").json()["status"] == "confirmed"
    assert balances(api, user, coupon) == {
        **before,
        "stock": before["stock"] - 2,
        "coupon": "used",
        "balance_cents": before["balance_cents"] - 300,
    }
    logged = naive.coordinator.fetch_one(
        "SELECT count(*) AS n FROM global_txns WHERE gtid = :g", g=order["gtid"]
    )
    assert logged == {"n": 0}  # no coordinator ever heard of it
    audit = api.audit()
    assert audit["ok"], audit["violations"]


def test_a_rejected_part_fails_the_order_and_leaves_the_other_parts_applied(naive):
    """The wallet refuses (100001 cents against 100000): the order is failed, but its stock
    stays sold and its coupon used, as nothing compensates them. The audit says so."""
    user, coupon, api = 202, "C-202-3", naive.api
    before = balances(api, user, coupon)
    reply = api.order(naive_order(user, 20, coupon, 100001))
    assert reply.status_code == 409, reply.text
    order = reply.json()
    assert (order["status"], order["reason"]) == ("failed", "insufficient_balance")
    assert order["error"]["code"] == "insufficient_balance"
    applied = {**before, "stock": before["stock"] - 20, "coupon": "used"}
    assert balances(api, user, coupon) == applied  # the wallet untouched, the rest kept
    audit = api.audit()
    assert not audit["ok"]
    found = {(v["check"], v.get("effect"), v.get("order_id")) for v in audit["violations"]}
    assert found == {
        ("failed_order_with_effects", "inventory", order["order_id"]),
        ("failed_order_with_effects", "coupon", order["order_id"]),
    }
