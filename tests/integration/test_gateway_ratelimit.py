"""The rate limiter against real Redis: exact limits under concurrency, per client and global."""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from gateway.ratelimit import Rule
from tests.helpers import as_user, wait_until
from tests.integration.gateway_kit import issued_key

pytestmark = pytest.mark.integration

PRODUCT = "/api/products/SKU-0001"


def put_rule(gw, name: str, **rule) -> None:
    body = {"route": "/api/products/<sku>", "scope": "client", **rule}
    response = gw.admin("PUT", f"/admin/ratelimits/{name}", json=body)
    assert response.status_code in (200, 201), response.text


def burst_of(gw, requests_by_client: dict[str, int]) -> dict[str, Counter[int]]:
    """Fire every client's requests at once; the status codes each client got."""
    jobs = [key for key, n in requests_by_client.items() for _ in range(n)]
    with ThreadPoolExecutor(max_workers=32) as pool:
        answers = list(pool.map(lambda key: (key, gw.get(PRODUCT, headers=issued_key(key))), jobs))
    statuses: dict[str, Counter[int]] = {key: Counter() for key in requests_by_client}
    for key, response in answers:
        statuses[key][response.status_code] += 1
        if response.status_code == 429:
            assert int(response.headers["Retry-After"]) >= 1
            assert response.json()["error"]["code"] == "rate_limited"
        assert "RateLimit-Remaining" in response.headers
    return statuses


def test_client_scope_holds_exactly_per_client_under_concurrency(gw):
    put_rule(gw, "per-client", rate_per_s=0.001, burst=10)
    statuses = burst_of(gw, {"alice": 40, "bob": 40, "carol": 25})
    assert statuses == {
        "alice": Counter({200: 10, 429: 30}),
        "bob": Counter({200: 10, 429: 30}),
        "carol": Counter({200: 10, 429: 15}),
    }


def test_global_scope_is_shared_by_every_client(gw):
    put_rule(gw, "everyone", rate_per_s=0.001, burst=15, scope="global")
    statuses = burst_of(gw, {"a": 12, "b": 12, "c": 12})
    assert sum(s[200] for s in statuses.values()) == 15
    assert sum(s[429] for s in statuses.values()) == 21


def test_headers_count_down_and_tokens_come_back_at_the_rate(gw):
    put_rule(gw, "slow", rate_per_s=5, burst=3)
    first = gw.get(PRODUCT, headers=issued_key("k"))
    assert first.status_code == 200
    assert (first.headers["RateLimit-Limit"], first.headers["RateLimit-Remaining"]) == ("3", "2")
    assert int(first.headers["RateLimit-Reset"]) >= 1
    for _ in range(2):
        assert gw.get(PRODUCT, headers=issued_key("k")).status_code == 200
    limited = gw.get(PRODUCT, headers=issued_key("k"))
    assert limited.status_code == 429
    assert (limited.headers["RateLimit-Remaining"], limited.headers["Retry-After"]) == ("0", "1")
    # At 5 tokens/s the next one is due within 0.2 s.
    wait_until(
        lambda: gw.get(PRODUCT, headers=issued_key("k")).status_code == 200,
        timeout_s=2,
        interval_s=0.05,
        what="a token to come back",
    )


def test_clients_without_a_key_are_told_apart_by_address(gw):
    put_rule(gw, "by-address", rate_per_s=0.001, burst=2)
    statuses = [gw.get(PRODUCT).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert gw.get(PRODUCT, headers=issued_key("someone")).status_code == 200


def test_an_invented_api_key_escapes_no_limit(gw):
    """Only an issued key names a client: any other value is the address's bucket."""
    put_rule(gw, "by-address", rate_per_s=0.001, burst=2)
    assert [gw.get(PRODUCT).status_code for _ in range(2)] == [200, 200]
    invented = [gw.get(PRODUCT, headers={"X-Api-Key": f"made-up-{n}"}) for n in range(3)]
    assert [r.status_code for r in invented] == [429] * 3
    forged = issued_key("someone")["X-Api-Key"][:-1] + "x"
    assert gw.get(PRODUCT, headers={"X-Api-Key": forged}).status_code == 429


def test_an_authenticated_user_is_one_client_wherever_it_calls_from(gw):
    put_rule(gw, "by-user", route="/api/*", rate_per_s=0.001, burst=2)
    me = as_user(5)
    assert gw.get(PRODUCT, headers=me).status_code == 200
    assert gw.get("/api/users/5/wallet", headers=me).status_code == 200
    assert gw.get(PRODUCT, headers={**me, **issued_key("other")}).status_code == 429
    assert gw.get("/api/users/6/wallet", headers=as_user(6)).status_code == 200


def test_all_matching_rules_apply_and_the_tightest_one_answers(gw):
    put_rule(gw, "wide", route="/api/*", rate_per_s=0.001, burst=100)
    put_rule(gw, "narrow", rate_per_s=0.001, burst=2)
    ok = gw.get(PRODUCT, headers=as_user(1))
    assert ok.headers["RateLimit-Limit"] == "2"
    gw.get(PRODUCT, headers=as_user(1))
    refused = gw.get(PRODUCT, headers=as_user(1))
    assert (refused.status_code, refused.json()["error"]["rule"]) == (429, "narrow")
    # A refused request takes no token from the other rule's bucket.
    other = gw.get("/api/users/1/wallet", headers=as_user(1))
    assert (other.status_code, other.headers["RateLimit-Remaining"]) == (200, "97")


def test_rules_are_changed_and_removed_at_runtime_and_persisted(gw, gateway_db):
    put_rule(gw, "tight", rate_per_s=0.001, burst=1)
    assert gw.get(PRODUCT, headers=issued_key("r")).status_code == 200
    assert gw.get(PRODUCT, headers=issued_key("r")).status_code == 429

    put_rule(gw, "tight", rate_per_s=1000, burst=50)
    loosened = gw.get(PRODUCT, headers=issued_key("r"))
    assert (loosened.status_code, loosened.headers["RateLimit-Limit"]) == (200, "50")
    row = gateway_db.fetch_one(
        "SELECT burst, rate_per_s FROM rate_limit_rules WHERE name = 'tight'"
    )
    assert row == {"burst": 50, "rate_per_s": 1000.0}
    listed = gw.admin("GET", "/admin/ratelimits").json()
    assert [r["rule"] for r in listed["items"]] == ["tight"]
    assert listed["failure_mode"] == "open"

    assert gw.admin("DELETE", "/admin/ratelimits/tight").status_code == 204
    free = gw.get(PRODUCT, headers=issued_key("r"))
    assert free.status_code == 200 and "RateLimit-Limit" not in free.headers
    assert gw.admin("DELETE", "/admin/ratelimits/tight").status_code == 404
    assert gateway_db.fetch_one("SELECT 1 AS x FROM rate_limit_rules") is None


@pytest.mark.parametrize(
    ("name", "body", "field"),
    [
        ("bad name!", {"route": "/api/orders", "rate_per_s": 1, "burst": 1}, "rule"),
        ("r", {"route": "api/orders", "rate_per_s": 1, "burst": 1}, "route"),
        ("r", {"route": "/api/*/x", "rate_per_s": 1, "burst": 1}, "route"),
        ("r", {"route": "/api/orders", "rate_per_s": 0, "burst": 1}, "rate_per_s"),
        ("r", {"route": "/api/orders", "rate_per_s": "5", "burst": 1}, "rate_per_s"),
        ("r", {"route": "/api/orders", "rate_per_s": 1, "burst": 0}, "burst"),
        ("r", {"route": "/api/orders", "rate_per_s": 1, "burst": 1.5}, "burst"),
        ("r", {"route": "/api/orders", "rate_per_s": 1, "burst": 1, "scope": "user"}, "scope"),
    ],
)
def test_bad_rules_are_400_naming_the_field(gw, name, body, field):
    response = gw.admin("PUT", f"/admin/ratelimits/{name}", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["field"] == field


def test_admin_needs_the_token(gw):
    response = gw.get("/admin/ratelimits")
    assert (response.status_code, response.json()["error"]["code"]) == (401, "unauthorized")


def test_a_fast_rule_takes_tokens_in_leases_and_spends_them_locally(gw, redis_client):
    put_rule(gw, "fast", rate_per_s=1000, burst=1000)  # a lease: 50 ms of rate = 50 tokens
    answers = [gw.get(PRODUCT, headers=issued_key("k")) for _ in range(10)]
    assert [a.status_code for a in answers] == [200] * 10
    bucket = f"{gw.gateway.options.namespace}:rl:fast:key:k"
    assert float(redis_client.hget(bucket, "tokens")) == 950, "one lease, Redis not asked since"
    assert [int(a.headers["RateLimit-Remaining"]) for a in answers[::3]] == [999, 996, 993, 990]


def test_leases_never_let_more_through_than_the_bucket_gave(gw):
    rule = Rule("leased", PRODUCT, rate_per_s=100, burst=100, scope="client")  # leases of 5
    started = time.monotonic()
    allowed = sum(gw.gateway.limiter.check([rule], "key:k")[0].allowed for _ in range(130))
    refilled = math.ceil(100 * (time.monotonic() - started))
    assert 100 <= allowed <= 100 + refilled


def test_threads_short_of_tokens_at_once_do_not_all_take_a_lease(gw, redis_client):
    """One thread renews a bucket's lease while the rest take single tokens: 32 threads at
    once would otherwise take 32 leases of 5 % each and empty a bucket nobody exceeded."""
    rule = Rule("herd", PRODUCT, rate_per_s=10_000, burst=10_000, scope="client")  # leases of 500
    start = threading.Barrier(32)

    def requests_of_one_thread(_: int) -> list[bool]:
        start.wait()
        return [gw.gateway.limiter.check([rule], "key:herd")[0].allowed for _ in range(50)]

    with ThreadPoolExecutor(max_workers=32) as pool:
        allowed = [ok for oks in pool.map(requests_of_one_thread, range(32)) for ok in oks]
    assert allowed == [True] * 1600
    left = float(redis_client.hget(f"{gw.gateway.options.namespace}:rl:herd:key:herd", "tokens"))
    assert left >= 10_000 - 1600 - 500, "at most one lease outstanding besides the requests"


@pytest.mark.parametrize("rate", [1e-9, 0.0009, 0, -1])
def test_a_rate_too_slow_to_expire_in_redis_is_refused(gw, rate):
    body = {"route": "/api/products/<sku>", "rate_per_s": rate, "burst": 1}
    response = gw.admin("PUT", "/admin/ratelimits/too-slow", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "rate_per_s"


def test_the_slowest_rate_with_the_largest_burst_still_limits(gw):
    """A full bucket's refill time must stay a key expiry Redis takes (once a 500)."""
    put_rule(gw, "slowest", rate_per_s=0.001, burst=1_000_000)
    response = gw.get(PRODUCT)
    assert response.status_code == 200, response.text
    assert int(response.headers["RateLimit-Remaining"]) == 999_999
