"""The product read cache against real Redis: single flight, negative caching, warm-up,
invalidation by orders, read-your-writes and stale-but-served."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from paxkit.web import component_of
from tests.helpers import as_user, wait_until
from tests.integration.gateway_kit import isolated_options, issued_key, running_gateway

pytestmark = pytest.mark.integration


def stock_of(response) -> int:
    assert response.status_code == 200, response.text
    return int(response.json()["stock"])


def test_a_stampede_of_50_misses_makes_one_upstream_call(gw, fake):
    fake.delay_s = 0.3
    start = threading.Barrier(50)

    def read(_: int):
        start.wait()
        return gw.get("/api/products/SKU-0003")

    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(read, range(50)))
    assert [a.status_code for a in answers] == [200] * 50
    assert {a.text for a in answers} == {answers[0].text}
    assert fake.count("/products/SKU-0003") == 1
    assert sorted({a.headers["X-Cache"] for a in answers}) == ["HIT", "MISS"]


def test_a_miss_is_cached_and_served_without_the_upstream(gw, fake):
    first = gw.get("/api/products/SKU-0002")
    again = gw.get("/api/products/SKU-0002")
    assert (first.headers["X-Cache"], again.headers["X-Cache"]) == ("MISS", "HIT")
    assert first.json() == again.json() == fake.product("SKU-0002")
    assert fake.count("/products/SKU-0002") == 1


def test_the_fresh_copy_lives_its_ttl_with_jitter(gw, redis_client):
    gw.get("/api/products/SKU-0002")
    key = f"{gw.gateway.options.namespace}:cache:product:SKU-0002"
    policy = gw.gateway.options.cache
    ttl_ms = redis_client.pttl(key)
    assert policy.ttl_s * (1 - policy.jitter) * 1000 - 500 <= ttl_ms
    assert ttl_ms <= policy.ttl_s * (1 + policy.jitter) * 1000


def test_unknown_skus_are_cached_as_missing(gw, fake):
    answers = [gw.get("/api/products/SKU-9999") for _ in range(5)]
    assert {a.status_code for a in answers} == {404}
    assert {a.json()["error"]["code"] for a in answers} == {"product_not_found"}
    assert fake.count("/products/SKU-9999") == 1


def test_what_cannot_be_a_sku_is_not_cached(gw, fake):
    for _ in range(2):
        assert gw.get("/api/products/bad%20sku").status_code == 404
    assert fake.count("/products/bad sku") == 2


def test_warm_up_loads_the_catalogue_at_start(gw_settings, fake):
    """The gateway's worker process warms the cache its web processes read."""
    with running_gateway(gw_settings, isolated_options(warmup=True)) as gw:
        (warm_up,) = [w for w in component_of(gw.app).background() if w.name == "gateway-warmup"]
        warm_up.start()
        key = f"{gw.gateway.options.namespace}:cache:product:SKU-0004"
        wait_until(lambda: gw.gateway.redis.client.exists(key), what="the warm-up")
        warm_up.stop()
        response = gw.get("/api/products/SKU-0004")
        listing = gw.get("/api/products")
    assert response.headers["X-Cache"] == "HIT"
    assert listing.headers["X-Cache"] == "HIT"
    assert len(listing.json()["items"]) == 5
    assert fake.count("/products/SKU-0004") == 0
    assert fake.count("/products") == 1


def test_an_order_invalidates_its_skus_and_its_client_reads_fresh(gw, fake):
    me, other = as_user(7), issued_key("other")  # the user who orders reads with its token
    assert stock_of(gw.get("/api/products/SKU-0001", headers=me)) == 1000
    assert stock_of(gw.get("/api/products/SKU-0005", headers=me)) == 1000
    order = {"user_id": 7, "items": [{"sku": "SKU-0001", "qty": 2}]}
    assert gw.post("/api/orders", json=order, headers=me).status_code == 201

    # Everyone sees the ordered SKU's new stock at once: its copy was dropped.
    after = gw.get("/api/products/SKU-0001", headers=other)
    assert (after.headers["X-Cache"], stock_of(after)) == ("MISS", 998)
    # Stock changed by another path: others see the cached copy until it expires, but the
    # client who just ordered reads around the cache for a few seconds.
    fake.stock["SKU-0005"] = 990
    assert stock_of(gw.get("/api/products/SKU-0005", headers=other)) == 1000
    mine = gw.get("/api/products/SKU-0005", headers=me)
    assert (mine.headers["X-Cache"], stock_of(mine)) == ("BYPASS", 990)


def test_stale_copy_is_served_marked_when_inventory_fails(gw, fake, redis_client):
    fresh = gw.get("/api/products/SKU-0002")
    assert fresh.status_code == 200
    redis_client.delete(f"{gw.gateway.options.namespace}:cache:product:SKU-0002")  # expired
    fake.failing = True
    stale = gw.get("/api/products/SKU-0002")
    assert stale.status_code == 200
    assert stale.json() == fresh.json()
    assert stale.headers["X-Cache"] == "STALE"
    assert stale.headers["Warning"] == '110 - "Response is Stale"'
    # Nothing stale to serve: the upstream's error goes through.
    assert gw.get("/api/products/SKU-0003").status_code == 500
