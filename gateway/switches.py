"""Degradation switches and levels (服务降级): what each one does and how they combine.

| switch          | when on                                                            |
|-----------------|--------------------------------------------------------------------|
| recommendations | GET /api/recommendations serves the static list, `degraded: true`  |
| crawler_block   | bot user agents (BOT_USER_AGENT) get an empty 200 on /api/*        |
| order_async     | POST /api/orders is forwarded with `Prefer: respond-async` (202)   |
| waiting_room    | POST /api/orders answers 503 `waiting_room` with Retry-After       |
| read_only       | every POST/PUT/PATCH/DELETE on /api/* answers 503 `read_only`      |

Levels are presets, each turning on everything the one before did and more:

| level   | recommendations | crawler_block | order_async | waiting_room | read_only |
|---------|-----------------|---------------|-------------|--------------|-----------|
| normal  |                 |               |             |              |           |
| general | on              |               |             |              |           |
| warning | on              | on            |             |              |           |
| error   | on              | on            | on          |              |           |
| severe  | on              | on            | on          | on           | on        |

A switch's state, first match wins: a manual setting (PUT /admin/switches/<name>, kept
until DELETE /admin/switches/<name>), else on if the level's preset has it, else on if
an open circuit breaker turns it on automatically (BREAKER_SWITCHES: the order
service's breaker opens the waiting room, the inventory's serves the static
recommendations), else off.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.ratelimit import Rule

SWITCHES = ("recommendations", "read_only", "waiting_room", "order_async", "crawler_block")
LEVELS = ("normal", "general", "warning", "error", "severe")
PRESETS: dict[str, frozenset[str]] = {
    "normal": frozenset(),
    "general": frozenset({"recommendations"}),
    "warning": frozenset({"recommendations", "crawler_block"}),
    "error": frozenset({"recommendations", "crawler_block", "order_async"}),
    "severe": frozenset(SWITCHES),
}
BREAKER_SWITCHES = {"waiting_room": "order", "recommendations": "inventory"}
# What a switch does when on, in the seed's terms (缓存, 限流, 异步削峰, 服务降级), for operators.
EFFECTS = {
    "recommendations": "GET /api/recommendations serves the static hot list, marked degraded "
    "(服务降级 of a non-core feature).",
    "crawler_block": "Bot user agents get an empty 200 on /api/* (限流: crawlers are shed first).",
    "order_async": "POST /api/orders is accepted at once (202) and settled through the queue "
    "at the pace the databases sustain (异步削峰).",
    "waiting_room": "POST /api/orders answers 503 waiting_room with Retry-After: no new orders.",
    "read_only": "Every POST/PUT/PATCH/DELETE on /api/* answers 503 read_only: writes pause, "
    "reads go on (from the 缓存 read cache where it can).",
}
# What each level means, each adding to the one before.
LEVEL_MEANINGS = {
    "normal": "Full service: only the read cache (缓存) and the rate-limit rules (限流) act.",
    "general": "服务降级 of the non-core: recommendations come from the static list.",
    "warning": "As general, and crawlers are turned away (限流 of bots).",
    "error": "As warning, and orders are queued and settled asynchronously (异步削峰).",
    "severe": "Everything: as error, plus the waiting room for orders and a read-only shop.",
}
# Self-declared crawlers and scrapers; curl, wget and HTTP libraries are not blocked.
BOT_USER_AGENT = re.compile(
    r"bot\b|crawl|spider|slurp|scrapy|headlesschrome|facebookexternalhit|ia_archiver",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Override:
    """A switch set by hand."""

    on: bool
    by: str
    at: str


@dataclass(frozen=True)
class SwitchState:
    name: str
    on: bool
    mode: str  # manual | automatic
    source: str  # manual | level | breaker
    upstream: str | None = None

    @property
    def manual(self) -> bool:
        return self.mode == "manual"


@dataclass(frozen=True)
class Snapshot:
    """The control plane as one gateway process sees it (replaced whole on every change)."""

    version: int = -1
    level: str = "normal"
    overrides: Mapping[str, Override] = field(default_factory=dict)
    rules: Mapping[str, Rule] = field(default_factory=dict)
    _by_route: dict[str, tuple[Rule, ...]] = field(init=False, repr=False, compare=False)
    _prefixed: tuple[Rule, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Index the rules once, so matching a request is a dictionary lookup."""
        by_route: dict[str, tuple[Rule, ...]] = {}
        for rule in self.rules.values():
            if not rule.route.endswith("*"):
                by_route[rule.route] = (*by_route.get(rule.route, ()), rule)
        object.__setattr__(self, "_by_route", by_route)
        prefixed = tuple(r for r in self.rules.values() if r.route.endswith("*"))
        object.__setattr__(self, "_prefixed", prefixed)

    def rules_for(self, template: str | None, path: str) -> tuple[Rule, ...]:
        """Rules whose route is the request's route template, its exact path, or a prefix*."""
        if not self.rules:
            return ()
        found = self._by_route.get(template, ()) if template else ()
        if path != template:
            found += self._by_route.get(path, ())
        found += tuple(r for r in self._prefixed if r.matches_prefix(path))
        return found

    def planned(self, name: str) -> bool:
        """On by hand or by the level (the breakers aside)."""
        override = self.overrides.get(name)
        return override.on if override is not None else name in PRESETS[self.level]

    def state(self, name: str, breaker_open: Callable[[str], bool]) -> SwitchState:
        override = self.overrides.get(name)
        if override is not None:
            return SwitchState(name, override.on, "manual", "manual")
        if name in PRESETS[self.level]:
            return SwitchState(name, True, "automatic", "level")
        upstream = BREAKER_SWITCHES.get(name)
        if upstream is not None and breaker_open(upstream):
            return SwitchState(name, True, "automatic", "breaker", upstream)
        return SwitchState(name, False, "automatic", "level")

    def describe(self, breaker_open: Callable[[str], bool]) -> dict[str, dict[str, Any]]:
        """Every switch for GET /admin/switches."""
        out: dict[str, dict[str, Any]] = {}
        for name in SWITCHES:
            state = self.state(name, breaker_open)
            entry: dict[str, Any] = {"on": state.on, "mode": state.mode, "source": state.source}
            if state.upstream:
                entry["upstream"] = state.upstream
            override = self.overrides.get(name)
            if override is not None:
                entry.update(updated_by=override.by, updated_at=override.at)
            out[name] = entry
        return out
