"""Admin API behind a bearer token: switches, level, rate limits, change log (the gateway's
own control plane) and audit, transactions and dead letters (served by the coordinator).

Changes are attributed to the `X-Actor` header (default `admin`) and the caller's
address in the change log (GET /admin/changes).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from gateway.control import Actor, ControlStore
from gateway.core import current_gateway
from gateway.ratelimit import SCOPES, Rule
from gateway.routes import relay, upstream
from gateway.switches import LEVELS, SWITCHES
from gateway.upstreams import segment
from paxkit.auth import require_bearer
from paxkit.errors import InvalidInput, NotFound
from paxkit.requests_json import json_body, optional_json_body
from paxkit.validation import validate_limit

admin = Blueprint("admin", __name__, url_prefix="/admin")

RULE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}\Z")
ROUTE = re.compile(r"^/[A-Za-z0-9_./<>:-]{0,199}\*?\Z")
ACTOR = re.compile(r"^[ -~]{1,64}\Z")
MAX_RATE = 1_000_000
# One token per 1000 s at the slowest: a full bucket's refill time stays a whole number of
# milliseconds that Redis takes as a key's expiry (slower rates overflowed PEXPIRE).
MIN_RATE = 0.001
MAX_CHANGES = 500
# The coordinator answers these by asking every service in turn.
COORDINATOR_ADMIN_TIMEOUT_S = 60.0


@admin.before_request
def require_token() -> None:
    settings = current_app.extensions["paxmart.settings"]
    require_bearer(settings.admin_token, "admin", "PAXMART_ADMIN_TOKEN")


@admin.get("/audit")
def audit() -> Response:
    return relay(upstream("coordinator").get("/admin/audit", timeout_s=COORDINATOR_ADMIN_TIMEOUT_S))


@admin.get("/transactions")
def transactions() -> Response:
    return relay(upstream("coordinator").get("/admin/transactions", params=request.args.to_dict()))


@admin.get("/transactions/<gtid>")
def transaction(gtid: str) -> Response:
    return relay(upstream("coordinator").get(f"/admin/transactions/{segment(gtid)}"))


@admin.get("/dead-letters")
def dead_letters() -> Response:
    """Every consumer's dead letters, gathered by the coordinator."""
    reply = upstream("coordinator").get(
        "/admin/dead-letters", params=request.args.to_dict(), timeout_s=COORDINATOR_ADMIN_TIMEOUT_S
    )
    return relay(reply)


@admin.post("/dead-letters/replay")
def replay_dead_letters() -> Response:
    reply = upstream("coordinator").post(
        "/admin/dead-letters/replay",
        json=optional_json_body(),
        timeout_s=COORDINATOR_ADMIN_TIMEOUT_S,
    )
    return relay(reply)


@admin.get("/switches")
def switches() -> Response:
    gateway = current_gateway()
    snapshot = gateway.control.snapshot
    return jsonify(
        {
            "level": snapshot.level,
            "switches": snapshot.describe(gateway.breaker_open),
            "breakers": gateway.breakers(),
            "version": snapshot.version,
        }
    )


@admin.put("/switches/<name>")
def set_switch(name: str) -> Response:
    known_switch(name)
    on = json_body().get("on")
    if not isinstance(on, bool):
        raise InvalidInput("on", "on must be true or false")
    announce(lambda store: store.set_switch(name, on, actor()))
    return switches()


@admin.delete("/switches/<name>")
def clear_switch(name: str) -> Response:
    """Drop the manual setting: the switch follows the level and the breakers again."""
    known_switch(name)
    version = control_store().clear_switch(name, actor())
    if version is not None:
        current_gateway().control.announce(version)
    return switches()


@admin.put("/level")
def set_level() -> Response:
    level = json_body().get("level")
    if level not in LEVELS:
        raise InvalidInput("level", f"level must be one of {', '.join(LEVELS)}")
    announce(lambda store: store.set_level(level, actor()))
    return switches()


@admin.get("/ratelimits")
def ratelimits() -> Response:
    gateway = current_gateway()
    rules = sorted(gateway.control.snapshot.rules.values(), key=lambda r: r.name)
    return jsonify(
        {
            "items": [r.as_json() for r in rules],
            "failure_mode": gateway.limiter.failure_mode,
        }
    )


@admin.put("/ratelimits/<rule>")
def put_ratelimit(rule: str) -> Any:
    parsed = parse_rule(rule, json_body())
    version, created = control_store().put_rule(parsed, actor())
    current_gateway().control.announce(version)
    return jsonify(parsed.as_json()), 201 if created else 200


@admin.delete("/ratelimits/<rule>")
def delete_ratelimit(rule: str) -> Any:
    version = control_store().delete_rule(rule, actor()) if RULE_NAME.match(rule) else None
    if version is None:
        raise NotFound(f"No rate-limit rule {rule!r}.", code="rule_not_found")
    current_gateway().control.announce(version)
    return "", 204


@admin.get("/changes")
def changes() -> Response:
    """The control plane's change log, newest first."""
    limit = validate_limit(request.args.get("limit"), 50, MAX_CHANGES)
    return jsonify({"items": control_store().changes(limit)})


def known_switch(name: str) -> None:
    if name not in SWITCHES:
        raise NotFound(
            f"No switch {name!r}; known: {', '.join(SWITCHES)}.", code="switch_not_found"
        )


def parse_rule(name: str, body: dict[str, Any]) -> Rule:
    """A rule from a PUT body, or a 400 naming the bad field."""
    if not RULE_NAME.match(name):
        raise InvalidInput("rule", "a rule name is 1-64 characters of [A-Za-z0-9_.-]")
    route = body.get("route")
    if not isinstance(route, str) or not ROUTE.match(route):
        raise InvalidInput(
            "route",
            "route must be a path such as /api/orders or /api/products/<sku>, "
            "optionally ending in * to cover every path below it",
        )
    rate = body.get("rate_per_s")
    if (
        not isinstance(rate, int | float)
        or isinstance(rate, bool)
        or not MIN_RATE <= rate <= MAX_RATE
    ):
        raise InvalidInput(
            "rate_per_s", f"rate_per_s must be a number from {MIN_RATE} to {MAX_RATE}"
        )
    burst = body.get("burst")
    if isinstance(burst, bool) or not isinstance(burst, int) or not 1 <= burst <= MAX_RATE:
        raise InvalidInput("burst", f"burst must be an integer from 1 to {MAX_RATE}")
    scope = body.get("scope", "client")
    if scope not in SCOPES:
        raise InvalidInput("scope", f"scope must be one of {', '.join(SCOPES)}")
    return Rule(name, route, float(rate), burst, scope)


def actor() -> Actor:
    name = request.headers.get("X-Actor", "admin")
    if not ACTOR.match(name):
        raise InvalidInput("X-Actor", "X-Actor must be 1-64 printable ASCII characters")
    return Actor(name, request.remote_addr)


def announce(change: Callable[[ControlStore], int]) -> None:
    """Make a change in the store, then push it to every gateway process."""
    current_gateway().control.announce(change(control_store()))


def control_store() -> ControlStore:
    """The control plane's database; while it is down, the edge answers 503."""
    return current_gateway().control.store
