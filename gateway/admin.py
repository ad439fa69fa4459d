"""Admin API behind a bearer token: switches, level, rate limits, change log (the gateway's
own control plane) and audit, transactions and dead letters (served by the coordinator).

Changes are attributed to the `X-Actor` header (default `admin`) and the caller's
address in the change log (GET /admin/changes).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy.exc import SQLAlchemyError

from gateway.control import Actor
from gateway.core import current_gateway
from gateway.ratelimit import SCOPES, Rule
from gateway.routes import relay, upstream
from gateway.switches import LEVELS, SWITCHES
from gateway.upstreams import segment
from paxkit.errors import ApiError, InvalidInput, NotFound, Unauthorized
from paxkit.requests_json import json_body, optional_json_body

admin = Blueprint("admin", __name__, url_prefix="/admin")

T = TypeVar("T")
RULE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
ROUTE = re.compile(r"^/[A-Za-z0-9_./<>:-]{0,199}\*?$")
ACTOR = re.compile(r"^[ -~]{1,64}$")
MAX_RATE = 1_000_000
MAX_CHANGES = 500
# The coordinator answers these by asking every service in turn.
COORDINATOR_ADMIN_TIMEOUT_S = 60.0


@admin.before_request
def require_token() -> None:
    expected = current_app.extensions["paxmart.settings"].admin_token
    supplied = request.headers.get("Authorization", "")
    if not hmac.compare_digest(supplied.encode(), f"Bearer {expected}".encode()):
        raise Unauthorized("A valid 'Authorization: Bearer <admin token>' header is required.")


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
    version = store_call(lambda store: store.clear_switch(name, actor()))
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


@admin.put("/ratelimits/<name>")
def put_ratelimit(name: str) -> Any:
    rule = parse_rule(name, json_body())
    version, created = store_call(lambda store: store.put_rule(rule, actor()))
    current_gateway().control.announce(version)
    return jsonify(rule.as_json()), 201 if created else 200


@admin.delete("/ratelimits/<name>")
def delete_ratelimit(name: str) -> Any:
    version = store_call(lambda store: store.delete_rule(name, actor()))
    if version is None:
        raise NotFound(f"No rate-limit rule {name!r}.", code="rule_not_found")
    current_gateway().control.announce(version)
    return "", 204


@admin.get("/changes")
def changes() -> Response:
    """The control plane's change log, newest first."""
    limit = request.args.get("limit", "50")
    if not limit.isdigit() or not 1 <= int(limit) <= MAX_CHANGES:
        raise InvalidInput("limit", f"limit must be an integer from 1 to {MAX_CHANGES}")
    return jsonify({"items": store_call(lambda store: store.changes(int(limit)))})


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
    if not isinstance(rate, int | float) or isinstance(rate, bool) or not 0 < rate <= MAX_RATE:
        raise InvalidInput("rate_per_s", f"rate_per_s must be a number above 0, up to {MAX_RATE}")
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


def announce(change: Callable[[Any], int]) -> None:
    """Make a change in the store, then push it to every gateway process."""
    current_gateway().control.announce(store_call(change))


def store_call(call: Callable[[Any], T]) -> T:
    try:
        return call(current_gateway().control.store)
    except SQLAlchemyError as err:
        raise ApiError(
            "The gateway's control store is unavailable; try again shortly.",
            code="control_store_unavailable",
            status=503,
            headers={"Retry-After": "1"},
        ) from err
