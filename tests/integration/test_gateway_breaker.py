"""Circuit breakers per upstream: closed -> open -> half-open -> closed, and what an open
breaker does to reads (cache) and orders (503), with a manual setting winning."""

from __future__ import annotations

import pytest

from gateway.breaker import BreakerPolicy
from tests.helpers import wait_until
from tests.integration.gateway_kit import isolated_options, running_gateway

pytestmark = pytest.mark.integration

FAST = BreakerPolicy(
    window_s=10, min_calls=4, failure_ratio=0.5, slow_ratio=0.5, open_s=0.5, probes=2
)
WALLET = "/api/users/1/wallet"
ORDER = {"user_id": 1, "items": [{"sku": "SKU-0001", "qty": 1}]}


@pytest.fixture
def fast_gw(gw_settings):
    with running_gateway(gw_settings, isolated_options(breaker=FAST)) as running:
        yield running


def breaker(gw, upstream: str) -> dict:
    return gw.admin("GET", "/admin/switches").json()["breakers"][upstream]


def test_closed_open_half_open_closed(fast_gw, fake):
    fake.failing = True
    assert [fast_gw.get(WALLET).status_code for _ in range(4)] == [500] * 4
    assert breaker(fast_gw, "redpacket")["state"] == "open"

    paused = fast_gw.get(WALLET)
    assert paused.status_code == 503
    assert paused.json()["error"] == {
        "code": "circuit_open",
        "message": "redpacket is failing; calls to it are paused (circuit open).",
        "upstream": "redpacket",
    }
    assert paused.headers["Retry-After"] == "1"
    assert fake.count("/users/1/wallet") == 4, "an open breaker lets nothing through"

    wait_until(lambda: breaker(fast_gw, "redpacket")["state"] == "half_open", timeout_s=3)
    fake.failing = False
    assert fast_gw.get(WALLET).status_code == 200
    assert breaker(fast_gw, "redpacket")["state"] == "half_open", "one probe is not enough"
    assert fast_gw.get(WALLET).status_code == 200
    assert breaker(fast_gw, "redpacket")["state"] == "closed"
    assert breaker(fast_gw, "order")["state"] == "closed", "breakers are per upstream"


def test_a_failed_probe_opens_it_again(fast_gw, fake):
    fake.failing = True
    for _ in range(4):
        fast_gw.get(WALLET)
    wait_until(lambda: breaker(fast_gw, "redpacket")["state"] == "half_open", timeout_s=3)
    assert fast_gw.get(WALLET).status_code == 500
    assert breaker(fast_gw, "redpacket")["state"] == "open"


def test_slow_calls_open_it_too(gw_settings, fake):
    slow = BreakerPolicy(min_calls=3, slow_call_s=0.1, slow_ratio=0.6, open_s=30)
    with running_gateway(gw_settings, isolated_options(breaker=slow)) as gw:
        fake.delay_s = 0.15
        assert [gw.get(WALLET).status_code for _ in range(3)] == [200] * 3
        status = breaker(gw, "redpacket")
        assert (status["state"], status["slow_ratio"], status["failure_ratio"]) == ("open", 1, 0)
        assert gw.get(WALLET).status_code == 503


def test_too_few_calls_never_open_it(fast_gw, fake):
    fake.failing = True
    assert [fast_gw.get(WALLET).status_code for _ in range(3)] == [500] * 3
    assert breaker(fast_gw, "redpacket")["state"] == "closed"


def test_open_inventory_breaker_serves_reads_from_the_cache(fast_gw, fake, redis_client):
    cached = fast_gw.get("/api/products/SKU-0002").json()
    redis_client.delete(f"{fast_gw.gateway.options.namespace}:cache:product:SKU-0002")
    fake.failing = True
    for _ in range(4):
        fast_gw.get("/api/products/SKU-0003")
    assert breaker(fast_gw, "inventory")["state"] == "open"
    calls = fake.count("/products/SKU-0002")

    stale = fast_gw.get("/api/products/SKU-0002")
    assert (stale.status_code, stale.headers["X-Cache"], stale.json()) == (200, "STALE", cached)
    assert fake.count("/products/SKU-0002") == calls, "served without calling inventory"
    recommendations = fast_gw.get("/api/recommendations").json()
    assert recommendations["degraded"] is True
    switch = fast_gw.admin("GET", "/admin/switches").json()["switches"]["recommendations"]
    assert switch == {"on": True, "mode": "automatic", "source": "breaker", "upstream": "inventory"}


def test_open_order_breaker_answers_503_and_a_manual_setting_wins(fast_gw, fake):
    fake.failing = True
    for _ in range(4):
        fast_gw.post("/api/orders", json=ORDER)
    refused = fast_gw.post("/api/orders", json=ORDER)
    assert (refused.status_code, refused.json()["error"]["code"]) == (503, "circuit_open")
    assert int(refused.headers["Retry-After"]) >= 1
    switch = fast_gw.admin("GET", "/admin/switches").json()["switches"]["waiting_room"]
    assert switch == {"on": True, "mode": "automatic", "source": "breaker", "upstream": "order"}
    assert fake.count("/orders") == 4

    # An operator who knows better forces the waiting room off: orders flow again.
    fake.failing = False
    response = fast_gw.admin("PUT", "/admin/switches/waiting_room", json={"on": False})
    assert response.json()["switches"]["waiting_room"]["mode"] == "manual"
    assert fast_gw.post("/api/orders", json=ORDER).status_code == 201
    assert fake.count("/orders") == 5
