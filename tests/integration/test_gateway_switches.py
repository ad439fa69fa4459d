"""Degradation switches and levels: each one's behaviour, manual over level, durable,
logged, and in force on every gateway instance within a second (Redis or not)."""

from __future__ import annotations

import time

import pytest
import requests

from gateway.switches import LEVELS, PRESETS, SWITCHES
from tests.helpers import wait_until
from tests.integration.gateway_kit import (
    free_port,
    isolated_options,
    running_gateway,
    two_gateways,
)

pytestmark = pytest.mark.integration

ORDER = {"user_id": 3, "items": [{"sku": "SKU-0002", "qty": 1}]}
GOOGLEBOT = {
    "User-Agent": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
}


def switch(gw, name: str, on: bool, **headers: str) -> None:
    response = gw.admin("PUT", f"/admin/switches/{name}", json={"on": on}, headers=headers)
    assert response.status_code == 200, response.text


def error_of(response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


def seen_within(probe, limit_s: float) -> float:
    """Seconds until probe() holds (fails past limit_s)."""
    started = time.monotonic()
    wait_until(probe, timeout_s=limit_s, interval_s=0.01, what="the change on the other instance")
    return time.monotonic() - started


def test_a_switch_change_is_in_force_on_another_instance_within_a_second(gw_settings):
    with two_gateways(gw_settings) as (a, b):
        assert b.post("/api/orders", json=ORDER).status_code == 201
        switch(a, "read_only", True)
        assert seen_within(lambda: b.post("/api/orders", json=ORDER).status_code == 503, 1.0) < 1
        a.admin("PUT", "/admin/level", json={"level": "warning"})
        seen_within(lambda: b.get("/api/products", headers=GOOGLEBOT).json() == {"items": []}, 1)
        rule = {"route": "/api/products/<sku>", "rate_per_s": 0.001, "burst": 1}
        a.admin("PUT", "/admin/ratelimits/one", json=rule)
        seen_within(lambda: "RateLimit-Limit" in b.get("/api/products/SKU-0001").headers, 1.0)


def test_instances_converge_by_polling_when_redis_is_down(gw_settings):
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    with two_gateways(gw_settings, redis_url=dead_redis) as (a, b):
        switch(a, "waiting_room", True)
        seen_within(lambda: b.post("/api/orders", json=ORDER).status_code == 503, 1.0)
        assert b.admin("GET", "/admin/switches").json()["switches"]["waiting_room"]["on"] is True


def test_changes_survive_a_restart_and_are_logged(gw_settings, gateway_db):
    with running_gateway(gw_settings, isolated_options()) as gw:
        switch(gw, "crawler_block", True, **{"X-Actor": "alice"})
        gw.admin("PUT", "/admin/level", json={"level": "general"})
    with running_gateway(gw_settings, isolated_options()) as restarted:
        state = restarted.admin("GET", "/admin/switches").json()
        assert state["level"] == "general"
        assert state["switches"]["crawler_block"]["mode"] == "manual"
        assert state["switches"]["crawler_block"]["updated_by"] == "alice"
        log = restarted.admin("GET", "/admin/changes?limit=2").json()["items"]
    assert [(c["actor"], c["kind"], c["target"], c["before"], c["after"]) for c in log] == [
        ("admin", "level", "level", {"level": "normal"}, {"level": "general"}),
        ("alice", "switch", "crawler_block", {"manual": None}, {"manual": True}),
    ]
    assert log[0]["address"] == "127.0.0.1" and log[0]["at"]
    assert gateway_db.fetch_one("SELECT level FROM control_state") == {"level": "general"}


def test_read_only_refuses_every_write_and_serves_reads(gw, fake):
    switch(gw, "read_only", True)
    refused = gw.post("/api/orders", json=ORDER)
    assert error_of(refused) == (503, "read_only")
    assert int(refused.headers["Retry-After"]) >= 1
    assert fake.count("/orders") == 0
    assert gw.get("/api/products/SKU-0001").status_code == 200
    assert gw.get("/api/users/1/wallet").status_code == 200
    switch(gw, "read_only", False)  # the admin API itself stays writable
    assert gw.post("/api/orders", json=ORDER).status_code == 201


def test_waiting_room_holds_orders_back_with_retry_after(gw, fake):
    switch(gw, "waiting_room", True)
    refused = gw.post("/api/orders", json=ORDER)
    assert error_of(refused) == (503, "waiting_room")
    assert refused.headers["Retry-After"] == "5"
    assert fake.count("/orders") == 0
    assert gw.get("/api/products/SKU-0001").status_code == 200


def test_recommendations_switch_serves_the_static_list(gw, fake):
    assert gw.get("/api/recommendations").json()["degraded"] is False
    switch(gw, "recommendations", True)
    body = gw.get("/api/recommendations").json()
    assert body["degraded"] is True and len(body["items"]) == 10
    assert fake.count("/products/top") == 1


def test_crawler_block_gives_bots_an_empty_200(gw, fake):
    switch(gw, "crawler_block", True)
    assert gw.get("/api/products", headers=GOOGLEBOT).json() == {"items": []}
    blocked = gw.get("/api/products/SKU-0001", headers=GOOGLEBOT)
    assert (blocked.status_code, blocked.json()) == (200, {})
    assert gw.post("/api/orders", json=ORDER, headers=GOOGLEBOT).json() == {}
    assert fake.count("/products/SKU-0001") == 0 and fake.count("/orders") == 0
    for agent in ("curl/8.5.0", "python-requests/2.32", "Mozilla/5.0 (X11; Linux x86_64) Firefox"):
        person = gw.get("/api/products/SKU-0001", headers={"User-Agent": agent})
        assert person.json()["sku"] == "SKU-0001", agent


def test_order_async_asks_the_order_service_to_answer_async(gw, fake):
    gw.post("/api/orders", json=ORDER)
    switch(gw, "order_async", True)
    gw.post("/api/orders", json=ORDER)
    assert [h.get("Prefer") for h in fake.order_headers] == [None, "respond-async"]


def test_levels_are_presets_and_a_manual_setting_wins(gw):
    for level in LEVELS:
        state = gw.admin("PUT", "/admin/level", json={"level": level}).json()
        assert {n for n, s in state["switches"].items() if s["on"]} == PRESETS[level], level
        assert all(s["source"] == "level" for s in state["switches"].values())
    assert PRESETS["severe"] == set(SWITCHES)
    switch(gw, "read_only", False)
    assert error_of(gw.post("/api/orders", json=ORDER)) == (503, "waiting_room")
    state = gw.admin("GET", "/admin/switches").json()["switches"]
    assert state["read_only"] == {
        "on": False,
        "mode": "manual",
        "source": "manual",
        "updated_by": "admin",
        "updated_at": state["read_only"]["updated_at"],
    }
    cleared = gw.admin("DELETE", "/admin/switches/read_only").json()["switches"]["read_only"]
    assert (cleared["on"], cleared["mode"]) == (True, "automatic")


@pytest.mark.parametrize(
    ("method", "path", "body", "expected"),
    [
        ("PUT", "/admin/switches/turbo", {"on": True}, (404, "switch_not_found")),
        ("DELETE", "/admin/switches/turbo", None, (404, "switch_not_found")),
        ("PUT", "/admin/switches/read_only", {"on": "yes"}, (400, "invalid_field")),
        ("PUT", "/admin/switches/read_only", {}, (400, "invalid_field")),
        ("PUT", "/admin/level", {"level": "panic"}, (400, "invalid_field")),
        ("GET", "/admin/changes?limit=0", None, (400, "invalid_field")),
    ],
)
def test_bad_admin_input_is_400_or_404_never_500(gw, method, path, body, expected):
    response = gw.admin(method, path, json=body)
    assert error_of(response) == expected
    if expected[0] == 400:
        assert response.json()["error"]["field"] in ("on", "level", "limit")


def test_admin_switches_needs_the_token(gw):
    response = requests.put(gw.url + "/admin/switches/read_only", json={"on": True}, timeout=5)
    assert response.status_code == 401
