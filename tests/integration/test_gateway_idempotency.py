"""Idempotency keys on POST /api/orders: replay, mismatch, concurrency, what is stored."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest

from tests.helpers import wait_until
from tests.integration.gateway_kit import free_port, isolated_options, running_gateway

pytestmark = pytest.mark.integration

ORDER = {"user_id": 9, "items": [{"sku": "SKU-0004", "qty": 1}], "mode": "2pc"}


def place(gw, key: str, body=ORDER):
    return gw.post("/api/orders", json=body, headers={"Idempotency-Key": key})


def record(gw, redis_client, key: str):
    return redis_client.get(f"{gw.gateway.options.namespace}:idem:{key}")


def test_the_same_key_and_body_replays_the_first_answer(gw, fake, redis_client):
    first = place(gw, "k-1")
    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    # The same JSON object, keys in another order, is the same body.
    again = place(gw, "k-1", dict(reversed(list(ORDER.items()))))
    assert (again.status_code, again.json()) == (201, first.json())
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(fake.order_headers) == 1
    assert fake.order_headers[0]["Idempotency-Key"] == "k-1", "passed on to the order service"
    ttl_s = redis_client.ttl(f"{gw.gateway.options.namespace}:idem:k-1")
    assert 24 * 3600 - 60 < ttl_s <= 24 * 3600


def test_the_same_key_with_another_body_is_422(gw, fake):
    assert place(gw, "k-2").status_code == 201
    reused = place(gw, "k-2", {**ORDER, "items": [{"sku": "SKU-0004", "qty": 2}]})
    assert reused.status_code == 422
    assert reused.json()["error"]["code"] == "idempotency_key_reused"
    assert len(fake.order_headers) == 1


def test_concurrent_requests_with_one_key_execute_once(gw, fake):
    fake.delay_s = 0.3
    start = threading.Barrier(10)

    def go(_: int):
        start.wait()
        return place(gw, "k-3")

    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(go, range(10)))
    assert len(fake.order_headers) == 1
    assert {(a.status_code, a.text) for a in answers} == {(201, answers[0].text)}
    assert sum(a.headers.get("Idempotent-Replayed") == "true" for a in answers) == 9


def test_a_duplicate_waits_only_so_long(gw_settings, fake):
    options = isolated_options(idempotency_wait_s=0.2)
    with running_gateway(gw_settings, options) as gw:
        fake.delay_s = 1.0
        with ThreadPoolExecutor(max_workers=1) as pool:
            first = pool.submit(place, gw, "k-4")
            wait_until(lambda: fake.count("/orders") == 1, what="the first request in flight")
            busy = place(gw, "k-4")
            assert first.result().status_code == 201
    assert (busy.status_code, busy.json()["error"]["code"]) == (409, "idempotency_in_progress")
    assert busy.headers["Retry-After"] == "1"


def test_an_answer_of_the_order_service_is_kept_even_an_error(gw, fake):
    fake.failing = True
    assert place(gw, "k-5").status_code == 500
    fake.failing = False
    replayed = place(gw, "k-5")
    assert (replayed.status_code, replayed.headers["Idempotent-Replayed"]) == (500, "true")
    assert fake.count("/orders") == 1


def test_an_order_that_never_left_releases_its_key(gw_settings, redis_client):
    nobody = f"http://127.0.0.1:{free_port()}"
    settings = replace(gw_settings, urls={**gw_settings.urls, "order": nobody})
    with running_gateway(settings, isolated_options()) as gw:
        refused = place(gw, "k-6")
        assert (refused.status_code, refused.json()["error"]["code"]) == (
            503,
            "upstream_unavailable",
        )
        assert record(gw, redis_client, "k-6") is None, "a retry may execute"


@pytest.mark.parametrize("key", ["x" * 129, "tab\there", "naïve"])
def test_a_malformed_key_is_400_naming_the_header(gw, fake, key):
    response = gw.post(
        "/api/orders",
        json=ORDER,
        headers={"Idempotency-Key": key.encode("utf-8").decode("latin-1")},
    )
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "Idempotency-Key"
    assert fake.count("/orders") == 0


def test_a_128_character_key_is_fine(gw):
    assert place(gw, "y" * 128).status_code == 201
