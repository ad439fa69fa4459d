"""The operator's actions and reads, shared by the JSON admin API (admin.py) and the
dashboard (gateway/ui): one way to change the control plane, so every change is made in
the control store, logged with its actor and pushed to every gateway process alike."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from gateway.control import Actor, ControlStore
from gateway.core import current_gateway
from gateway.ratelimit import SCOPES, Rule
from gateway.routes import upstream
from gateway.switches import LEVELS, SWITCHES, Snapshot
from gateway.upstreams import segment
from paxkit.errors import InvalidInput, NotFound
from paxkit.http import Reply

RULE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}\Z")
ROUTE = re.compile(r"^/[A-Za-z0-9_./<>:-]{0,199}\*?\Z")
ACTOR = re.compile(r"^[ -~]{1,64}\Z")
MAX_RATE = 1_000_000
# One token per 1000 s at the slowest: a full bucket's refill time stays a whole number of
# milliseconds that Redis takes as a key's expiry (slower rates overflowed PEXPIRE).
MIN_RATE = 0.001
# The coordinator answers these by asking every service in turn.
COORDINATOR_ADMIN_TIMEOUT_S = 60.0


def actor_named(name: str, address: str | None, field: str = "X-Actor") -> Actor:
    if not ACTOR.match(name):
        raise InvalidInput(field, f"{field} must be 1-64 printable ASCII characters")
    return Actor(name, address)


def known_switch(name: str) -> None:
    if name not in SWITCHES:
        raise NotFound(
            f"No switch {name!r}; known: {', '.join(SWITCHES)}.", code="switch_not_found"
        )


def control_state() -> dict[str, Any]:
    """The level, every switch and every breaker, as GET /admin/switches answers."""
    gateway = current_gateway()
    snapshot = gateway.control.snapshot
    return {
        "level": snapshot.level,
        "switches": snapshot.describe(gateway.breaker_open),
        "breakers": gateway.breakers(),
        "version": snapshot.version,
    }


def stored_snapshot() -> Snapshot:
    """The control state as the store holds it now (a page shows what every process will
    follow within a second, whichever process serves it)."""
    return control_store().load()


def set_switch(name: str, on: bool, actor: Actor) -> None:
    known_switch(name)
    announce(lambda store: store.set_switch(name, on, actor))


def clear_switch(name: str, actor: Actor) -> None:
    """Drop the manual setting: the switch follows the level and the breakers again."""
    known_switch(name)
    version = control_store().clear_switch(name, actor)
    if version is not None:
        current_gateway().control.announce(version)


def set_level(level: Any, actor: Actor) -> None:
    if level not in LEVELS:
        raise InvalidInput("level", f"level must be one of {', '.join(LEVELS)}")
    announce(lambda store: store.set_level(level, actor))


def rules() -> list[Rule]:
    return sorted(current_gateway().control.snapshot.rules.values(), key=lambda r: r.name)


def put_rule(rule: Rule, actor: Actor) -> bool:
    """Create or replace a rule; True when it is new."""
    version, created = control_store().put_rule(rule, actor)
    current_gateway().control.announce(version)
    return created


def delete_rule(name: str, actor: Actor) -> None:
    version = control_store().delete_rule(name, actor) if RULE_NAME.match(name) else None
    if version is None:
        raise NotFound(f"No rate-limit rule {name!r}.", code="rule_not_found")
    current_gateway().control.announce(version)


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


def changes(limit: int) -> list[dict[str, Any]]:
    """The control plane's change log, newest first."""
    return control_store().changes(limit)


def announce(change: Callable[[ControlStore], int]) -> None:
    """Make a change in the store, then push it to every gateway process."""
    current_gateway().control.announce(change(control_store()))


def control_store() -> ControlStore:
    """The control plane's database; while it is down, the edge answers 503."""
    return current_gateway().control.store


# What the coordinator serves: the audit, the transaction log and every dead letter.


def audit() -> Reply:
    return upstream("coordinator").get("/admin/audit", timeout_s=COORDINATOR_ADMIN_TIMEOUT_S)


def transactions(params: dict[str, Any]) -> Reply:
    return upstream("coordinator").get("/admin/transactions", params=params)


def transaction(gtid: str) -> Reply:
    return upstream("coordinator").get(f"/admin/transactions/{segment(gtid)}")


def dead_letters(params: dict[str, Any]) -> Reply:
    """Every consumer's dead letters, gathered by the coordinator."""
    return upstream("coordinator").get(
        "/admin/dead-letters", params=params, timeout_s=COORDINATOR_ADMIN_TIMEOUT_S
    )


def replay_dead_letters(body: dict[str, Any]) -> Reply:
    return upstream("coordinator").post(
        "/admin/dead-letters/replay", json=body, timeout_s=COORDINATOR_ADMIN_TIMEOUT_S
    )
