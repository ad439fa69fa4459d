"""Redis stopped or hung (SIGSTOP) under the gateway: bounded latency, local rate-limit
buckets (fail-open) or 503 (fail-closed), uncached reads, and recovery once Redis is back.
(Idempotency keys don't live in Redis: test_gateway_idempotency.py.) Each test runs its
own redis-server."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from gateway.core import GatewayOptions
from gateway.metrics import RATELIMIT
from tests.helpers import wait_until
from tests.integration.gateway_kit import isolated_options, issued_key, running_gateway, timed

pytestmark = pytest.mark.integration

PRODUCT = "/api/products/SKU-0001"
# A request must never take much longer than one Redis socket timeout because of Redis.
BOUND_S = GatewayOptions().redis_timeout_s + 0.4
# Under a burst, CPU queueing adds to every request whatever Redis does: compare with the
# same burst on a healthy Redis. Without the short timeouts a hung Redis would hold each
# request indefinitely (redis-py's default socket timeout is none).
HUNG_MARGIN_S = 1.0
RULE = {"route": "/api/products/<sku>", "rate_per_s": 0.001, "burst": 3, "scope": "client"}


def limited_by(decision: str, source: str) -> float:
    return RATELIMIT.labels("rule", decision, source)._value.get()


def quick(gw, path: str = PRODUCT, **kwargs):
    response, elapsed = timed(lambda: gw.get(path, **kwargs))
    assert elapsed < BOUND_S, f"{path} took {elapsed:.2f}s"
    return response


@pytest.mark.parametrize("failure", ["stopped", "paused"])
def test_redis_down_bounds_latency_and_falls_back_to_local_buckets(
    on_own_redis, own_redis, fake, failure
):
    with running_gateway(on_own_redis, isolated_options()) as gw:
        assert gw.admin("PUT", "/admin/ratelimits/rule", json=RULE).status_code == 201
        assert quick(gw).headers["X-Cache"] == "MISS"
        own_redis.stop() if failure == "stopped" else own_redis.pause()
        local_before = limited_by("limited", "local")

        answers = [quick(gw, headers=issued_key("k")) for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert limited_by("limited", "local") == local_before + 1
        assert {a.headers.get("X-Cache") for a in answers[:3]} == {"BYPASS"}
        assert fake.count("/products/SKU-0001") == 4, "reads go to the upstream directly"
        assert quick(gw, "/api/users/1/wallet").status_code == 200
        assert gw.admin("GET", "/admin/switches").status_code == 200
        if failure == "paused":
            own_redis.resume()
            wait_until(
                lambda: gw.get(PRODUCT).headers.get("X-Cache") == "HIT",
                timeout_s=5,
                what="the cache in use again",
            )


def test_many_requests_at_once_against_a_hung_redis_stay_bounded(on_own_redis, own_redis):
    def burst(gw) -> list[float]:
        with ThreadPoolExecutor(max_workers=20) as pool:
            answers = list(pool.map(lambda _: timed(lambda: gw.get(PRODUCT)), range(60)))
        assert {r.status_code for r, _ in answers} == {200}
        return [t for _, t in answers]

    with running_gateway(on_own_redis, isolated_options()) as gw:
        gw.admin("PUT", "/admin/ratelimits/rule", json={**RULE, "burst": 1000})
        healthy = burst(gw)
        own_redis.pause()
        hung = burst(gw)
    assert max(hung) < max(healthy) + HUNG_MARGIN_S, (max(healthy), max(hung))


def test_fail_closed_refuses_limited_routes_while_redis_is_down(on_own_redis, own_redis):
    with running_gateway(on_own_redis, isolated_options(ratelimit_failure_mode="closed")) as gw:
        gw.admin("PUT", "/admin/ratelimits/rule", json=RULE)
        own_redis.stop()
        refused = quick(gw)
        assert (refused.status_code, refused.json()["error"]["code"]) == (
            503,
            "rate_limiter_unavailable",
        )
        assert refused.headers["Retry-After"] == "1"
        assert quick(gw, "/api/users/1/wallet").status_code == 200, "unlimited routes flow"
        assert gw.admin("GET", "/admin/ratelimits").json()["failure_mode"] == "closed"
