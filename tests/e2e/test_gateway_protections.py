"""The gateway's protections in the running stack (two gunicorn workers, real services)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from gateway.clients import issue_api_key
from gateway.switches import SWITCHES
from tests.conftest import TEST_ENV
from tests.e2e.conftest import ADMIN
from tests.helpers import wait_until

_keys = itertools.count(1)
GOOGLEBOT = {"User-Agent": "Googlebot/2.1 (+http://www.google.com/bot.html)"}


def admin(api, method: str, path: str, **kwargs) -> requests.Response:
    return api.http.request(method, api.base_url + path, headers=ADMIN, timeout=10, **kwargs)


def in_force_everywhere(api, version: int) -> None:
    """Until every gateway worker has loaded `version` (fresh connections reach any worker)."""

    def everyone() -> bool:
        return all(
            requests.get(api.base_url + "/admin/switches", headers=ADMIN, timeout=5).json()[
                "version"
            ]
            >= version
            for _ in range(8)
        )

    wait_until(everyone, timeout_s=5, what=f"control version {version} on every worker")


def change(api, method: str, path: str, body=None) -> None:
    response = admin(api, method, path, json=body)
    assert response.status_code in (200, 201, 204), response.text
    in_force_everywhere(api, admin(api, "GET", "/admin/switches").json()["version"])


@pytest.fixture(autouse=True)
def normal_afterwards(api) -> Iterator[None]:
    yield
    admin(api, "PUT", "/admin/level", json={"level": "normal"})
    for name in SWITCHES:
        admin(api, "DELETE", f"/admin/switches/{name}")
    for rule in admin(api, "GET", "/admin/ratelimits").json()["items"]:
        admin(api, "DELETE", f"/admin/ratelimits/{rule['rule']}")
    in_force_everywhere(api, admin(api, "GET", "/admin/switches").json()["version"])


def client() -> dict[str, str]:
    """A client of its own: an API key issued to it (an invented one would be the address)."""
    name = f"e2e-client-{next(_keys)}"
    return {"X-Api-Key": issue_api_key(name, TEST_ENV["PAXMART_AUTH_SIGNING_KEY"])}


def test_product_reads_are_cached_and_an_order_refreshes_them(api, user):
    me, other = client(), client()
    before = api.get("/api/products/SKU-0077", headers=other)
    again = api.get("/api/products/SKU-0077", headers=other)
    assert again.headers["X-Cache"] == "HIT"
    assert again.json() == before.json()
    order = {"user_id": user, "items": [{"sku": "SKU-0077", "qty": 2}]}
    assert api.order(order, headers=me).status_code == 201
    after = api.get("/api/products/SKU-0077", headers=other)
    assert after.json()["stock"] == before.json()["stock"] - 2


def test_concurrent_orders_with_one_idempotency_key_place_one_order(api, user, dbs):
    body = {"user_id": user, "items": [{"sku": "SKU-0078", "qty": 1}]}
    key = {"Idempotency-Key": f"e2e-{user}", **api.as_user(user)}
    start = threading.Barrier(6)

    def place(_: int) -> requests.Response:
        start.wait()
        return requests.post(api.base_url + "/api/orders", json=body, headers=key, timeout=30)

    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(place, range(6)))
    assert {a.status_code for a in answers} == {201}
    assert len({a.json()["order_id"] for a in answers}) == 1
    orders = dbs["order"].fetch_all("SELECT order_id FROM orders WHERE user_id = :u", u=user)
    assert [o["order_id"] for o in orders] == [answers[0].json()["order_id"]]
    changed = api.order({**body, "items": [{"sku": "SKU-0078", "qty": 2}]}, headers=key)
    assert (changed.status_code, changed.json()["error"]["code"]) == (422, "idempotency_key_reused")


def test_a_key_replays_its_first_answer_after_redis_restarts_empty(api, user, dbs, redis_client):
    body = {"user_id": user, "items": [{"sku": "SKU-0079", "qty": 2}], "red_packet_cents": 300}
    key = {"Idempotency-Key": f"e2e-flush-{user}"}
    stock, wallet = api.product("SKU-0079")["stock"], api.wallet(user)
    first = api.order(body, headers=key)
    assert first.status_code == 201, first.text
    redis_client.flushdb()  # how this suite restarts Redis empty
    again = api.order(body, headers=key)
    assert (again.status_code, again.json()) == (201, first.json())
    assert again.headers["Idempotent-Replayed"] == "true"
    orders = dbs["order"].fetch_all("SELECT order_id FROM orders WHERE user_id = :u", u=user)
    assert [o["order_id"] for o in orders] == [first.json()["order_id"]]
    assert api.product("SKU-0079")["stock"] == stock - 2
    assert api.wallet(user) == {**wallet, "balance_cents": wallet["balance_cents"] - 300}


def test_a_rate_limit_holds_across_gateway_workers(api):
    rule = {"route": "/api/users/<user_id>/wallet", "rate_per_s": 0.001, "burst": 3}
    change(api, "PUT", "/admin/ratelimits/wallets", rule)
    five = api.as_user(5)  # the authenticated user is the client, wherever it calls from
    statuses = [
        requests.get(api.base_url + "/api/users/5/wallet", headers=five, timeout=10).status_code
        for _ in range(5)
    ]
    assert statuses == [200, 200, 200, 429, 429]
    invented = {**five, "X-Api-Key": "a-key-nobody-issued"}
    assert api.get("/api/users/5/wallet", headers=invented).status_code == 429
    assert api.get("/api/users/5/wallet", headers={**five, **client()}).status_code == 429
    assert api.get("/api/users/6/wallet").status_code == 200


def test_read_only_and_crawler_block_in_the_stack(api, user):
    change(api, "PUT", "/admin/switches/read_only", {"on": True})
    refused = api.order({"user_id": user, "items": [{"sku": "SKU-0001", "qty": 1}]})
    assert (refused.status_code, refused.json()["error"]["code"]) == (503, "read_only")
    assert api.get("/api/products/SKU-0001").status_code == 200

    change(api, "PUT", "/admin/level", {"level": "warning"})
    assert api.get("/api/products", headers=GOOGLEBOT).json() == {"items": []}
    assert api.get("/api/recommendations").json()["degraded"] is True
    state = admin(api, "GET", "/admin/switches").json()
    assert state["switches"]["read_only"]["mode"] == "manual"
    assert state["switches"]["crawler_block"]["source"] == "level"


def test_metrics_count_the_protections(api):
    api.get("/api/products/SKU-0002")
    text = api.get("/metrics").text
    for name in ("paxmart_gateway_cache_total", "paxmart_gateway_breaker_state"):
        assert name in text
