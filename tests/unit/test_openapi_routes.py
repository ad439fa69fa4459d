"""The OpenAPI descriptions are true: every route each component serves is in its spec, and
every operation the spec gives a component is served by it.

Each component's app is built through its composition root and its Flask url_map walked,
so a route added (or removed) later fails here until the spec says so too. The public spec
belongs to the gateway; the internal one names the components that serve each operation
(`x-paxmart-served-by`) and the setting that turns it on (`x-paxmart-enabled-by`).
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
import yaml
from flask import Flask

from paxkit.config import REPO_ROOT, Settings
from paxkit.web import create_app

SPECS = REPO_ROOT / "docs" / "openapi"
DECLARATIONS = {
    "gateway": "gateway.app",
    "coordinator": "coordinator.app",
    "order": "services.order.app",
    "inventory": "services.inventory.app",
    "coupon": "services.coupon.app",
    "redpacket": "services.redpacket.app",
}
INTERNAL = [name for name in DECLARATIONS if name != "gateway"]
METHODS = ("get", "put", "post", "delete", "patch")
# Settings that add routes, as the spec names them (`x-paxmart-enabled-by`).
ENABLING = ("PAXMART_3PC_MODE", "PAXMART_NAIVE_MODE")
FLASK_ARGUMENT = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")

Route = tuple[str, str]  # (METHOD, /openapi/{path})


def load_spec(name: str) -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load((SPECS / f"{name}.yaml").read_text())
    return spec


def operations(spec: dict[str, Any]) -> Iterator[tuple[Route, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method in METHODS:
            if method in item:
                yield (method.upper(), path), item[method]


def spec_routes(spec: dict[str, Any], component: str | None, enabled: set[str]) -> set[Route]:
    """The operations a component must serve with these settings on (None: every one)."""
    return {
        route
        for route, op in operations(spec)
        if (component is None or component in op.get("x-paxmart-served-by", []))
        and op.get("x-paxmart-enabled-by", "") in {"", *enabled}
    }


def served_routes(app: Flask) -> set[Route]:
    """Every (method, path) the app's url_map serves, its path written as OpenAPI writes it."""
    return {
        (method, FLASK_ARGUMENT.sub(r"{\1}", rule.rule))
        for rule in app.url_map.iter_rules()
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }


def component_app(name: str, settings: Settings) -> Flask:
    declaration = importlib.import_module(DECLARATIONS[name]).COMPONENT
    return create_app(declaration.build(settings))


def with_enabled(settings: Settings, enabled: set[str]) -> Settings:
    return dataclasses.replace(
        settings,
        threepc_mode="PAXMART_3PC_MODE" in enabled,
        naive_mode="PAXMART_NAIVE_MODE" in enabled,
    )


@pytest.fixture(scope="module")
def base_settings() -> Settings:
    from paxkit.config import load_settings

    return load_settings()


def difference(served: set[Route], described: set[Route]) -> dict[str, list[str]]:
    return {
        "served but not described": sorted(f"{m} {p}" for m, p in served - described),
        "described but not served": sorted(f"{m} {p}" for m, p in described - served),
    }


ALL_ON: set[str] = set(ENABLING)
ALL_OFF: set[str] = set()


@pytest.mark.parametrize("enabled", [ALL_ON, ALL_OFF], ids=["modes-on", "modes-off"])
def test_the_gateway_serves_exactly_the_public_spec(base_settings, enabled):
    app = component_app("gateway", with_enabled(base_settings, enabled))
    described = spec_routes(load_spec("public"), None, enabled)
    assert difference(served_routes(app), described) == difference(set(), set())


@pytest.mark.parametrize("enabled", [ALL_ON, ALL_OFF], ids=["modes-on", "modes-off"])
@pytest.mark.parametrize("component", INTERNAL)
def test_each_component_serves_exactly_its_part_of_the_internal_spec(
    base_settings, component, enabled
):
    app = component_app(component, with_enabled(base_settings, enabled))
    described = spec_routes(load_spec("internal"), component, enabled)
    assert described, f"the internal spec gives {component} no operation"
    assert difference(served_routes(app), described) == difference(set(), set())


def test_every_internal_operation_names_known_components_and_settings():
    for route, op in operations(load_spec("internal")):
        served_by = op.get("x-paxmart-served-by")
        assert served_by and set(served_by) <= set(INTERNAL), route
        setting = op.get("x-paxmart-enabled-by")
        assert setting is None or setting in ENABLING, route


def test_only_health_and_metrics_go_without_the_service_credential():
    spec = load_spec("internal")
    assert spec["security"] == [{"serviceToken": []}]
    scheme = spec["components"]["securitySchemes"]["serviceToken"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "X-Service-Token")
    open_routes = {route for route, op in operations(spec) if op.get("security") == []}
    assert open_routes == {("GET", "/healthz"), ("GET", "/metrics")}


def test_admin_operations_declare_how_they_are_guarded():
    """Every /admin/* operation says how it is guarded: the admin token (with its 401),
    another scheme the spec defines (a dashboard's session cookie), or `security: []` for
    an open page such as a login form. No other operation needs the admin token."""
    spec = load_spec("public")
    schemes = set(spec["components"]["securitySchemes"])
    for (method, path), op in operations(spec):
        security = op.get("security")
        if not path.startswith("/admin/"):
            assert security != [{"adminToken": []}], (method, path)
            continue
        assert security is not None, (method, path)
        assert all(set(requirement) <= schemes for requirement in security), (method, path)
        if security == [{"adminToken": []}]:
            assert "401" in op["responses"], (method, path)


@pytest.mark.parametrize("name", ["public", "internal"])
def test_the_spec_is_valid_openapi_3_1(name):
    spec = load_spec(name)
    assert spec["openapi"].startswith("3.1.")
    schemathesis.openapi.from_dict(spec).validate()


def test_the_walk_sees_a_route_the_spec_lacks(base_settings):
    app = component_app("inventory", with_enabled(base_settings, ALL_ON))
    app.add_url_rule("/made-up/<thing>", "made_up", lambda thing: thing, methods=["PUT"])
    described = spec_routes(load_spec("internal"), "inventory", ALL_ON)
    assert difference(served_routes(app), described)["served but not described"] == [
        "PUT /made-up/{thing}"
    ]
