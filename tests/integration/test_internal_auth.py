"""Internal endpoints are internal: every route of the coordinator and the services but
`/healthz` and `/metrics` needs the stack's service credential, and the gateway's admin API
its admin token; a process started without one refuses those calls.

Each component's routes are found by walking its app's url_map, so a route added later is
covered without touching this file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from coordinator.app import create_app as coordinator_app
from paxkit.auth import OPEN_ENDPOINTS, SERVICE_HEADER
from paxkit.config import Settings
from paxkit.http import ServiceClient, component_client
from services.coupon.app import create_app as coupon_app
from services.inventory.app import create_app as inventory_app
from services.order.app import create_app as order_app
from services.redpacket.app import create_app as redpacket_app
from tests.conftest import TEST_ENV
from tests.integration.gateway_kit import (
    ADMIN,
    FakeUpstream,
    isolated_options,
    running_gateway,
    serving,
)

FACTORIES: dict[str, Callable[[Settings], Flask]] = {
    "coordinator": coordinator_app,
    "order": order_app,
    "inventory": inventory_app,
    "coupon": coupon_app,
    "redpacket": redpacket_app,
}
# Routes each walk must find, so an empty or broken walk can't pass.
EXPECTED = {
    "coordinator": {"/transactions", "/transactions/statuses", "/admin/audit", "/admin/recover"},
    "order": {"/orders", "/audit/orders", "/audit/leftovers"},
    "inventory": {
        "/xa/prepare",
        "/tcc/<op>",
        "/saga/<op>",
        "/naive/apply",
        "/3pc/cancommit",
        "/3pc/abort",
        "/products",
        "/audit/ledger",
        "/audit/3pc",
    },
    "coupon": {"/xa/commit", "/tcc/<op>", "/naive/apply", "/coupons/<coupon_id>"},
    "redpacket": {"/xa/rollback", "/saga/<op>", "/naive/apply", "/users/<user_id>/wallet"},
}
PLACEHOLDER = "it-auth-1"  # every path argument: a valid gtid, an unknown id elsewhere
TOKEN = TEST_ENV["PAXMART_SERVICE_TOKEN"]


def internal_routes(app: Flask) -> Iterator[tuple[str, str, str]]:
    """(rule, method, url) of every route but the open ones, with placeholder arguments."""
    adapter = app.url_map.bind("localhost")
    for rule in app.url_map.iter_rules():
        if rule.endpoint in OPEN_ENDPOINTS:
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            url = adapter.build(
                rule.endpoint, dict.fromkeys(rule.arguments, PLACEHOLDER), method=method
            )
            yield rule.rule, method, url


def call(app: Flask, method: str, url: str, headers: dict[str, str]) -> Any:
    body: dict[str, Any] | None = {} if method in ("POST", "PUT") else None
    return app.test_client().open(url, method=method, json=body, headers=headers)


@pytest.fixture(scope="module")
def quiet(fresh_databases: Settings) -> Settings:
    """The suite's settings with the naive baseline on, so its routes are walked too."""
    return dataclasses.replace(fresh_databases, naive_mode=True)


@pytest.fixture(scope="module")
def apps(quiet: Settings) -> dict[str, Flask]:
    return {name: factory(quiet) for name, factory in FACTORIES.items()}


@pytest.mark.parametrize("component", FACTORIES)
def test_the_walk_finds_the_protocol_routes(apps, component):
    rules = {rule for rule, _, _ in internal_routes(apps[component])}
    assert EXPECTED[component] <= rules, EXPECTED[component] - rules


@pytest.mark.parametrize("component", FACTORIES)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {SERVICE_HEADER: "wrong-token"},
        {SERVICE_HEADER: ""},
        {"Authorization": f"Bearer {TOKEN}"},
    ],
    ids=["none", "wrong", "empty", "as-bearer"],
)
def test_every_internal_route_refuses_a_call_without_the_credential(apps, component, headers):
    refused = []
    for rule, method, url in internal_routes(apps[component]):
        response = call(apps[component], method, url, headers)
        error = (response.get_json(silent=True) or {}).get("error", {})
        if response.status_code != 401 or error.get("code") != "unauthorized":
            refused.append(f"{method} {rule}: {response.status_code} {error}")
    assert not refused, "\n".join(refused)


@pytest.mark.parametrize("component", FACTORIES)
def test_with_the_credential_every_internal_route_is_served(apps, component):
    let_through = {}
    for rule, method, url in internal_routes(apps[component]):
        response = call(apps[component], method, url, {SERVICE_HEADER: TOKEN})
        error = (response.get_json(silent=True) or {}).get("error") or {}
        let_through[f"{method} {rule}"] = (response.status_code, error.get("code"))
    refused = {
        r: answer
        for r, answer in let_through.items()
        if answer[0] == 401 or answer[1] == "credential_not_configured"
    }
    assert let_through and not refused, let_through


@pytest.mark.parametrize("component", FACTORIES)
def test_health_and_metrics_stay_open(apps, component):
    client = apps[component].test_client()
    assert client.get("/healthz").status_code == 200
    assert client.get("/metrics").status_code == 200


@pytest.mark.parametrize("component", FACTORIES)
def test_a_process_started_without_a_service_credential_refuses_internal_calls(quiet, component):
    app = FACTORIES[component](dataclasses.replace(quiet, service_token=None))
    for rule, method, url in internal_routes(app):
        response = call(app, method, url, {SERVICE_HEADER: TOKEN})
        assert response.status_code == 503, (method, rule, response.status_code)
        assert response.get_json()["error"]["code"] == "credential_not_configured"
        assert "PAXMART_SERVICE_TOKEN" in response.get_json()["error"]["message"]
    assert app.test_client().get("/healthz").status_code == 200


def test_the_internal_client_carries_the_credential_to_a_real_branch(quiet, apps):
    with serving(apps["inventory"]) as url:
        settings = dataclasses.replace(quiet, urls={**quiet.urls, "inventory": url})
        listed = component_client(settings, "inventory", 5.0).get("/xa/prepared")
        anonymous = ServiceClient("inventory", url, 5.0).get("/xa/prepared")
    assert listed.status == 200 and isinstance(listed.body["items"], list)
    assert anonymous.status == 401
    assert anonymous.body["error"]["code"] == "unauthorized"


# ---------------------------------------------------------------- the gateway


DASHBOARD = "/admin/ui"
# The dashboard's own open routes: its stylesheet and scripts, and the login form.
DASHBOARD_OPEN = frozenset({f"{DASHBOARD}/static/<path:filename>", f"{DASHBOARD}/login"})


def admin_routes(app: Flask) -> Iterator[tuple[str, str, str]]:
    """The JSON admin API's routes (the dashboard's have a session of their own)."""
    return (
        (r, m, u)
        for r, m, u in internal_routes(app)
        if r.startswith("/admin") and not r.startswith(DASHBOARD)
    )


def dashboard_routes(app: Flask) -> Iterator[tuple[str, str, str]]:
    return (
        (r, m, u)
        for r, m, u in internal_routes(app)
        if r.startswith(DASHBOARD) and r not in DASHBOARD_OPEN
    )


def test_the_gateway_reaches_the_services_with_the_credential(gw, fake: FakeUpstream):
    placed = gw.post("/api/orders", json={"user_id": 1, "items": [{"sku": "SKU-0001", "qty": 1}]})
    assert placed.status_code == 201
    assert fake.order_headers[-1].get(SERVICE_HEADER) == TOKEN


def test_every_gateway_admin_route_needs_the_admin_token(gw):
    routes = list(admin_routes(gw.app))
    assert {"/admin/switches", "/admin/ratelimits", "/admin/audit"} <= {r for r, _, _ in routes}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {SERVICE_HEADER: TOKEN}):
        for rule, method, url in routes:
            response = call(gw.app, method, url, headers)
            assert response.status_code == 401, (headers, method, rule, response.status_code)
            assert response.get_json()["error"]["code"] == "unauthorized"
    assert call(gw.app, "GET", "/admin/switches", ADMIN).status_code == 200


def test_a_gateway_started_without_an_admin_token_refuses_admin_calls(gw_settings):
    settings = dataclasses.replace(gw_settings, admin_token=None)
    with running_gateway(settings, isolated_options()) as gateway:
        for rule, method, url in admin_routes(gateway.app):
            response = call(gateway.app, method, url, ADMIN)
            assert response.status_code == 503, (method, rule, response.status_code)
            body = response.get_json()["error"]
            assert body["code"] == "credential_not_configured"
            assert "PAXMART_ADMIN_TOKEN" in body["message"]
        assert gateway.get("/api/products/SKU-0001").status_code == 200


def test_every_dashboard_route_needs_a_session_not_the_bearer_token(gw):
    """A page sends the browser to the login form; anything else is 401 session_required."""
    routes = list(dashboard_routes(gw.app))
    assert {f"{DASHBOARD}/", f"{DASHBOARD}/level", f"{DASHBOARD}/api/overview"} <= {
        r for r, _, _ in routes
    }
    for headers in ({}, ADMIN):
        for rule, method, url in routes:
            response = call(gw.app, method, url, headers)
            if method == "GET" and not rule.startswith(f"{DASHBOARD}/api/"):
                assert response.status_code == 302, (method, rule, response.status_code)
                assert response.headers["Location"].startswith(f"{DASHBOARD}/login?next=")
            else:
                assert response.status_code == 401, (method, rule, response.status_code)
                assert "session_required" in response.get_data(as_text=True)


def test_a_gateway_started_without_an_admin_token_closes_the_dashboard(gw_settings):
    settings = dataclasses.replace(gw_settings, admin_token=None)
    with running_gateway(settings, isolated_options()) as gateway:
        walked = [*dashboard_routes(gateway.app), ("login", "GET", f"{DASHBOARD}/login")]
        for rule, method, url in walked:
            response = call(gateway.app, method, url, {})
            text = response.get_data(as_text=True)
            assert response.status_code == 503, (method, rule, response.status_code)
            assert "credential_not_configured" in text and "PAXMART_ADMIN_TOKEN" in text
