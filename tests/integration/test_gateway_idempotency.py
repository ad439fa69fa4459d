"""Idempotency keys on POST /api/orders: durable records in the gateway's database, replay,
mismatch, concurrency, what is stored, and answers whose outcome is unknown."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest

from paxkit.db import Database, make_engine
from tests.helpers import wait_until
from tests.integration.gateway_kit import (
    DroppingUpstream,
    free_port,
    isolated_options,
    running_gateway,
)

pytestmark = pytest.mark.integration

ORDER = {"user_id": 9, "items": [{"sku": "SKU-0004", "qty": 1}], "mode": "2pc"}
ORDER_ID = "X-Order-Id"


def place(gw, key: str, body=ORDER):
    return gw.post("/api/orders", json=body, headers={"Idempotency-Key": key})


def record(gateway_db, key: str):
    return gateway_db.fetch_one(
        "SELECT order_id, owner, status, location FROM idempotency_keys WHERE key = :k", k=key
    )


def forwarded_ids(fake) -> list[str]:
    return [headers[ORDER_ID] for headers in fake.order_headers]


def test_the_same_key_and_body_replays_the_first_answer(gw, fake, gateway_db):
    first = place(gw, "k-1")
    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    # The same JSON object, keys in another order, is the same body.
    again = place(gw, "k-1", dict(reversed(list(ORDER.items()))))
    assert (again.status_code, again.json()) == (201, first.json())
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(fake.order_headers) == 1
    stored = record(gateway_db, "k-1")
    assert forwarded_ids(fake) == [stored["order_id"]], "the key's order id is forwarded"
    assert (stored["owner"], stored["status"]) == (None, 201)


def test_a_key_outlives_a_redis_flush_and_a_gateway_restart(
    gw_settings, fake, gateway_db, redis_client
):
    with running_gateway(gw_settings, isolated_options()) as gw:
        first = place(gw, "k-durable")
        assert first.status_code == 201
    redis_client.flushdb()
    with running_gateway(gw_settings, isolated_options()) as restarted:
        again = place(restarted, "k-durable")
    assert (again.status_code, again.json()) == (201, first.json())
    assert again.headers["Idempotent-Replayed"] == "true"
    assert fake.count("/orders") == 1


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


def test_a_5xx_is_never_kept_and_the_retry_forwards_the_same_order_id(gw, fake, gateway_db):
    fake.failing = True
    assert place(gw, "k-5").status_code == 500
    assert record(gateway_db, "k-5")["status"] is None
    fake.failing = False
    retried = place(gw, "k-5")
    assert retried.status_code == 201 and "Idempotent-Replayed" not in retried.headers
    replayed = place(gw, "k-5")
    assert (replayed.status_code, replayed.headers["Idempotent-Replayed"]) == (201, "true")
    ids = forwarded_ids(fake)
    assert len(ids) == 2 and ids[0] == ids[1] == record(gateway_db, "k-5")["order_id"]


def test_an_order_that_never_left_releases_its_key(gw_settings, gateway_db):
    nobody = f"http://127.0.0.1:{free_port()}"
    settings = replace(gw_settings, urls={**gw_settings.urls, "order": nobody})
    with running_gateway(settings, isolated_options()) as gw:
        refused = place(gw, "k-6")
    assert (refused.status_code, refused.json()["error"]["code"]) == (503, "upstream_unavailable")
    assert "order_id" not in refused.json()["error"], "nothing was recorded"
    kept = record(gateway_db, "k-6")
    assert (kept["owner"], kept["status"]) == (None, None), "a retry may execute"


def test_a_lost_answer_is_outcome_unknown_and_the_retry_forwards_the_same_order_id(
    gw_settings, gateway_db
):
    with DroppingUpstream() as dropping:
        settings = replace(gw_settings, urls={**gw_settings.urls, "order": dropping.url})
        with running_gateway(settings, isolated_options()) as gw:
            lost = place(gw, "k-7")
            again = place(gw, "k-7")
            keyless = gw.post("/api/orders", json=ORDER)
    for answer in (lost, again, keyless):
        error = answer.json()["error"]
        assert (answer.status_code, error["code"]) == (503, "outcome_unknown")
        assert answer.headers["Location"] == error["location"] == f"/api/orders/{error['order_id']}"
    assert lost.json()["error"]["order_id"] == again.json()["error"]["order_id"]
    assert lost.json()["error"]["order_id"] == record(gateway_db, "k-7")["order_id"]
    assert [r[ORDER_ID] for r in dropping.requests] == [
        lost.json()["error"]["order_id"],
        lost.json()["error"]["order_id"],
        keyless.json()["error"]["order_id"],
    ], "without a key the gateway still assigns the order id it names"
    assert record(gateway_db, "k-7")["status"] is None


def test_keys_work_while_redis_is_down(on_own_redis, own_redis, fake):
    with running_gateway(on_own_redis, isolated_options()) as gw:
        own_redis.stop()
        first = place(gw, "k-8")
        again = place(gw, "k-8")
    assert first.status_code == 201
    assert (again.status_code, again.headers["Idempotent-Replayed"]) == (201, "true")
    assert fake.count("/orders") == 1


@contextlib.contextmanager
def refusing_connections(db: Database) -> Iterator[None]:
    """The database takes no connection and has lost every one it had, until the end."""
    name = db.engine.url.database
    server = Database(make_engine(db.engine.url.set(database="postgres"), pool_size=1))
    try:
        server.fetch_all(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false; SELECT 1 AS ok')
        server.fetch_all(
            "SELECT pg_terminate_backend(pid) AS gone FROM pg_stat_activity WHERE datname = :name",
            name=name,
        )
        yield
    finally:
        server.fetch_all(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true; SELECT 1 AS ok')
        server.dispose()
        db.dispose()  # its pooled connections were terminated


def test_keys_are_refused_while_the_gateway_database_is_down(gw, fake, gateway_db):
    with refusing_connections(gateway_db):
        keyed = place(gw, "k-9")
        keyless = gw.post("/api/orders", json=ORDER)
    assert (keyed.status_code, keyed.json()["error"]["code"]) == (503, "idempotency_unavailable")
    assert keyed.headers["Retry-After"] == "1"
    assert keyless.status_code == 201, "orders without a key flow"
    assert fake.count("/orders") == 1
    assert place(gw, "k-9").status_code == 201, "and keys work again once it is back"


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
