"""Orders in every synchronous mode through the gateway: exact effects, clean rejections,
no oversell, no double use, no overdraft."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.e2e.conftest import ADMIN, SERVICE

MODES = ("2pc", "tcc", "saga", "3pc", "paxos")
# The operations each mode's timeline shows for a committed order.
COMMIT_OPS = {
    "2pc": {"prepare", "commit"},
    "tcc": {"try", "confirm"},
    "saga": {"action"},
    "3pc": {"cancommit", "precommit", "docommit"},
    "paxos": {"prepare", "commit"},
}


@pytest.fixture(params=MODES)
def mode(request) -> str:
    return str(request.param)


def test_happy_path_applies_every_effect_exactly(api, user, mode):
    before = api.product("SKU-0050")
    response = api.order(
        {
            "user_id": user,
            "items": [{"sku": "SKU-0050", "qty": 2}],
            "coupon_id": f"C-{user}-2",
            "red_packet_cents": 700,
            "mode": mode,
        }
    )
    assert response.status_code == 201, response.text
    order = response.json()
    assert (order["status"], order["reason"], order["mode"]) == ("confirmed", None, mode)
    assert (
        order["total_cents"],
        order["discount_cents"],
        order["red_packet_cents"],
        order["payable_cents"],
    ) == (10000, 1000, 700, 8300)
    assert order["items"] == [{"sku": "SKU-0050", "qty": 2, "price_cents": 5000}]
    assert response.headers["Location"] == f"/api/orders/{order['order_id']}"

    assert api.wallet(user) == {"user_id": user, "balance_cents": 99300, "frozen_cents": 0}
    assert api.product("SKU-0050")["stock"] == before["stock"] - 2
    assert api.coupon_status(user, f"C-{user}-2") == "used"
    assert api.get(f"/api/orders/{order['order_id']}").json()["status"] == "confirmed"
    listed = api.get(f"/api/users/{user}/orders").json()["items"]
    assert [o["order_id"] for o in listed] == [order["order_id"]]

    txn = api.get(f"/admin/transactions/{order['gtid']}", headers=ADMIN).json()
    assert (txn["status"], txn["mode"]) == ("committed", mode)
    seen = {(e["branch"], e["op"], e["outcome"]) for e in txn["timeline"]}
    for branch in ("inventory", "coupon", "redpacket"):
        assert {(branch, op, "ok") for op in COMMIT_OPS[mode]} <= seen
    assert "order" not in {branch for branch, _, _ in seen}, "the order is no branch"


def assert_rejected_with_nothing_deducted(api, user, body, reason, sku):
    stock_before, wallet_before = api.product(sku)["stock"], api.wallet(user)
    coupons_before = api.get(f"/api/users/{user}/coupons").json()
    response = api.order({"user_id": user, **body})
    assert response.status_code == 409, response.text
    order = response.json()
    assert (order["status"], order["reason"], order["error"]["code"]) == ("failed", reason, reason)
    assert api.get(f"/api/orders/{order['order_id']}").json()["status"] == "failed"
    assert api.product(sku)["stock"] == stock_before
    assert api.wallet(user) == wallet_before
    assert api.get(f"/api/users/{user}/coupons").json() == coupons_before


def test_insufficient_balance_is_rejected_by_the_wallet_branch(api, user, mode):
    # One cent more than the seeded wallet holds; only the wallet's branch can tell, after
    # the stock and the coupon were taken (saga: compensated; tcc: cancelled).
    assert_rejected_with_nothing_deducted(
        api,
        user,
        {
            "items": [{"sku": "SKU-0100", "qty": 20}],
            "coupon_id": f"C-{user}-3",
            "red_packet_cents": 100001,
            "mode": mode,
        },
        "insufficient_balance",
        "SKU-0100",
    )


def test_used_coupon_is_rejected(api, user, mode):
    first = api.order(
        {
            "user_id": user,
            "items": [{"sku": "SKU-0020", "qty": 1}],
            "coupon_id": f"C-{user}-1",
            "mode": mode,
        }
    )
    assert first.status_code == 201
    assert_rejected_with_nothing_deducted(
        api,
        user,
        {
            "items": [{"sku": "SKU-0020", "qty": 1}],
            "coupon_id": f"C-{user}-1",
            "red_packet_cents": 50,
            "mode": mode,
        },
        "coupon_unavailable",
        "SKU-0020",
    )


def test_someone_elses_coupon_is_rejected(api, user, another_user, mode):
    assert_rejected_with_nothing_deducted(
        api,
        user,
        {
            "items": [{"sku": "SKU-0020", "qty": 1}],
            "coupon_id": f"C-{another_user}-1",
            "mode": mode,
        },
        "coupon_unavailable",
        "SKU-0020",
    )


def test_coupon_below_its_min_spend_does_not_apply_and_stays_unused(api, user, mode):
    """API.md's own example: 600 cents of goods with C-7-1 (min spend 1000)."""
    response = api.order(
        {
            "user_id": user,
            "items": [{"sku": "SKU-0003", "qty": 2}],
            "coupon_id": f"C-{user}-1",
            "red_packet_cents": 100,
            "mode": mode,
        }
    )
    assert response.status_code == 201, response.text
    order = response.json()
    assert (order["total_cents"], order["discount_cents"], order["payable_cents"]) == (600, 0, 500)
    assert order["coupon_id"] == f"C-{user}-1"
    assert api.coupon_status(user, f"C-{user}-1") == "available"
    assert api.wallet(user)["balance_cents"] == 99900


def test_unknown_sku_and_out_of_stock_are_rejected(api, user, mode):
    assert_rejected_with_nothing_deducted(
        api,
        user,
        {
            "items": [{"sku": "SKU-0021", "qty": 1}, {"sku": "SKU-7777", "qty": 1}],
            "red_packet_cents": 10,
            "mode": mode,
        },
        "unknown_sku",
        "SKU-0021",
    )
    assert api.order({"user_id": user, "items": [{"sku": "SKU-0022", "qty": 1}]}).ok
    assert_rejected_with_nothing_deducted(
        api,
        user,
        {
            "items": [{"sku": "SKU-0021", "qty": 1}, {"sku": "SKU-0022", "qty": 1000}],
            "red_packet_cents": 10,
            "mode": mode,
        },
        "out_of_stock",
        "SKU-0021",
    )


def place_concurrently(api, bodies):
    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        return list(pool.map(api.order, bodies))


LAST_UNITS_SKU = {
    "2pc": "SKU-0090",
    "tcc": "SKU-0091",
    "saga": "SKU-0092",
    "3pc": "SKU-0093",
    "paxos": "SKU-0094",
}


def test_concurrent_orders_never_oversell_the_last_units(api, user, mode):
    sku = LAST_UNITS_SKU[mode]
    first = api.order({"user_id": user, "items": [{"sku": sku, "qty": 995}], "mode": mode})
    assert first.status_code == 201, first.text
    assert api.product(sku)["stock"] == 5

    bodies = [{"user_id": user, "items": [{"sku": sku, "qty": 1}], "mode": mode} for _ in range(30)]
    responses = place_concurrently(api, bodies)

    confirmed = [r for r in responses if r.status_code == 201]
    failed = [r for r in responses if r.status_code == 409]
    assert len(confirmed) + len(failed) == 30, [r.text for r in responses if r.status_code >= 500]
    assert 1 <= len(confirmed) <= 5
    assert {r.json()["reason"] for r in failed} <= {"out_of_stock", "timeout"}
    assert api.product(sku)["stock"] == 5 - len(confirmed)


def test_one_coupon_used_concurrently_wins_once(api, user, mode):
    """Each order buys its own SKU, so the coupon is the only row they contend for: with a
    second contended row, two 2pc orders holding one each in prepared branches would wait
    on each other across databases until both lock timeouts fire and both lose."""
    coupon = f"C-{user}-1"
    bodies = [
        {
            "user_id": user,
            "items": [{"sku": f"SKU-{30 + n:04d}", "qty": 1}],
            "coupon_id": coupon,
            "mode": mode,
        }
        for n in range(10)
    ]
    responses = place_concurrently(api, bodies)
    assert sorted(r.status_code for r in responses) == [201] + [409] * 9
    assert {r.json()["reason"] for r in responses if r.status_code == 409} <= {
        "coupon_unavailable",
        "timeout",
    }
    assert api.coupon_status(user, coupon) == "used"


def test_one_wallet_overspent_concurrently_never_goes_negative(api, user, mode):
    """Each order buys its own SKU (32,000 to 35,600 cents), so the wallet is the only row
    they contend for (see the coupon test above)."""
    bodies = [
        {
            "user_id": user,
            "items": [{"sku": f"SKU-{80 + n:04d}", "qty": 4}],
            "red_packet_cents": 30000,
            "mode": mode,
        }
        for n in range(10)
    ]
    responses = place_concurrently(api, bodies)
    confirmed = [r for r in responses if r.status_code == 201]
    assert all(r.status_code in (201, 409) for r in responses)
    assert 1 <= len(confirmed) <= 3
    wallet = api.wallet(user)
    assert wallet == {
        "user_id": user,
        "balance_cents": 100000 - 30000 * len(confirmed),
        "frozen_cents": 0,
    }


@pytest.mark.parametrize("txn_mode", ["2pc", "msg"])
def test_placements_racing_under_one_order_id_place_it_once(api, stack, dbs, user, txn_mode):
    """What a retry meets while its first attempt still runs: the order service places an
    order id once (the attempts collide on it), and every attempt answers that order."""
    order_id = f"ord-race-{txn_mode}-{user}"
    body = {"user_id": user, "items": [{"sku": "SKU-0044", "qty": 1}], "red_packet_cents": 100}

    # Read behind the gateway: its cache is not told of orders that bypass it.
    def stock() -> int:
        return int(
            requests.get(
                stack.url("inventory") + "/products/SKU-0044", headers=SERVICE, timeout=10
            ).json()["stock"]
        )

    def balance() -> int:
        wallet = requests.get(
            stack.url("redpacket") + f"/users/{user}/wallet", headers=SERVICE, timeout=10
        )
        return int(wallet.json()["balance_cents"])

    stock_before, balance_before = stock(), balance()
    start = threading.Barrier(4)

    def place(_: int) -> requests.Response:
        start.wait()
        return requests.post(
            stack.url("order") + "/orders",
            json={**body, "mode": txn_mode},
            headers={"X-Order-Id": order_id, **SERVICE},
            timeout=30,
        )

    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(place, range(4)))
    assert {a.status_code for a in answers} <= {201, 202}, [a.text for a in answers]
    assert {a.json()["order_id"] for a in answers} == {order_id}
    api.signed_in.own(order_id, user)  # placed behind the gateway: its reads are the user's
    orders = dbs["order"].fetch_all("SELECT order_id FROM orders WHERE user_id = :u", u=user)
    assert [o["order_id"] for o in orders] == [order_id]
    assert api.settled(order_id, timeout_s=60)["status"] == "confirmed"
    assert (stock(), balance()) == (stock_before - 1, balance_before - 100)
