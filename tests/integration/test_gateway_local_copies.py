"""The read cache's in-process copies: a hot read costs no Redis call, an order through any
gateway instance drops the copies of every instance, and a process that may have missed a
notice does not trust its copies."""

from __future__ import annotations

from functools import partial

import pytest

from gateway.cache import CachePolicy
from tests.helpers import as_user, wait_until
from tests.integration.gateway_kit import (
    isolated_options,
    issued_key,
    running_gateway,
    two_gateways,
)

pytestmark = pytest.mark.integration

PRODUCT = "/api/products/SKU-0002"
# Copies that outlive the test: only a notice can explain them going away.
LONG_LIVED = CachePolicy(local_ttl_s=60.0)


def listening(*gateways) -> None:
    for gw in gateways:
        wait_until(
            partial(lambda g: g.gateway.notices.connected, gw), timeout_s=5, what="the notices"
        )


def copied(gw, path: str = PRODUCT, **kwargs) -> None:
    """Read until this instance holds its own copy: a miss, then a hit from Redis."""
    gw.get(path, **kwargs)
    assert gw.get(path, **kwargs).headers["X-Cache"] == "HIT"


def stock_of(response) -> int:
    assert response.status_code == 200, response.text
    return int(response.json()["stock"])


def test_a_hot_read_is_served_from_the_process_without_redis(gw, fake, redis_client):
    listening(gw)
    copied(gw)
    redis_client.delete(f"{gw.gateway.options.namespace}:cache:product:SKU-0002")
    assert gw.get(PRODUCT).headers["X-Cache"] == "HIT", "the process's own copy"
    assert fake.count("/products/SKU-0002") == 1
    # The copy lives local_ttl_s (1 s), then the read goes to Redis, finds nothing, loads.
    wait_until(lambda: gw.get(PRODUCT).headers["X-Cache"] == "MISS", timeout_s=3)
    assert fake.count("/products/SKU-0002") == 2


def test_an_order_through_one_instance_drops_the_copies_of_the_other(gw_settings, fake):
    me, other = as_user(7), issued_key("other")  # the user who orders reads with its token
    with two_gateways(gw_settings, isolated_options(cache=LONG_LIVED)) as (a, b):
        listening(a, b)
        copied(a, headers=other)
        copied(b, headers=other)
        copied(b, "/api/products/SKU-0005", headers=other)
        order = {"user_id": 7, "items": [{"sku": "SKU-0002", "qty": 3}]}
        assert a.post("/api/orders", json=order, headers=me).status_code == 201

        wait_until(
            lambda: stock_of(b.get(PRODUCT, headers=other)) == 997,
            timeout_s=1.0,
            interval_s=0.01,
            what="the other instance to drop its copy",
        )
        # The client who ordered reads around the cache on the other instance too.
        fake.stock["SKU-0005"] = 990
        assert stock_of(b.get("/api/products/SKU-0005", headers=other)) == 1000
        mine = b.get("/api/products/SKU-0005", headers=me)
        assert (mine.headers["X-Cache"], stock_of(mine)) == ("BYPASS", 990)


def test_copies_are_not_trusted_once_the_notices_stop(on_own_redis, own_redis, fake):
    options = isolated_options(cache=LONG_LIVED)
    with running_gateway(on_own_redis, options) as gw:
        listening(gw)
        copied(gw)
        own_redis.stop()
        wait_until(lambda: not gw.gateway.notices.connected, timeout_s=5, what="notices lost")
        fake.stock["SKU-0002"] = 500
        answer = gw.get(PRODUCT)
        assert (answer.headers["X-Cache"], stock_of(answer)) == ("BYPASS", 500)
        own_redis.start()
        listening(gw)
        assert gw.get(PRODUCT).headers["X-Cache"] in ("MISS", "BYPASS")
        wait_until(lambda: gw.get(PRODUCT).headers["X-Cache"] == "HIT", timeout_s=5)
