"""The overview's numbers, read from the project's own metrics: the gateway's in process,
every other component's from its /metrics. Counters come as totals; the page turns two
readings into rates (orders/s, 429s/s) and histogram deltas into p50/p99."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field

from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from gateway.upstreams import UPSTREAMS
from paxkit.errors import ApiError
from paxkit.http import ServiceClient
from paxkit.metrics import own_metrics

SCRAPE_TIMEOUT_S = 2.0
ORDER_ROUTE = "/api/orders"
BREAKER_STATES = ("closed", "half-open", "open")


@dataclass(frozen=True)
class Reading:
    """One sample: its name (suffix included), labels and value."""

    name: str
    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class LastAudit:
    ok: bool
    violations: int
    finished_at: float


@dataclass(frozen=True)
class Overview:
    """Everything the overview draws, at one moment; totals are since each process began."""

    at: float
    transactions: dict[str, float] = field(default_factory=dict)  # "mode outcome" -> total
    order_latency: list[tuple[float, float]] = field(default_factory=list)  # (le, total)
    orders_timed: float = 0.0  # the histogram's count (its +Inf bucket, which JSON can't hold)
    limited: float = 0.0  # 429s answered by the gateway
    cache: dict[str, float] = field(default_factory=dict)  # outcome -> total
    breakers: dict[str, str] = field(default_factory=dict)  # upstream -> state
    outbox_lag_s: dict[str, float] = field(default_factory=dict)  # component -> seconds
    queues: dict[str, float] = field(default_factory=dict)  # queue -> messages waiting
    dead_letters: dict[str, float] = field(default_factory=dict)  # component -> count
    rules_limited: dict[str, float] = field(default_factory=dict)  # rule -> 429s
    audit: LastAudit | None = None
    unreachable: list[str] = field(default_factory=list)


def readings(families: Iterable[Metric]) -> list[Reading]:
    return [Reading(s.name, s.labels, s.value) for f in families for s in f.samples]


def parse(text: str) -> list[Reading]:
    """Readings from Prometheus text format."""
    return readings(text_string_to_metric_families(text))


def rules_limited(found: list[Reading]) -> dict[str, float]:
    """429s per rate-limit rule (the limiter's decisions, wherever the token came from)."""
    out: dict[str, float] = {}
    for r in named(found, "paxmart_gateway_ratelimit_total"):
        if r.labels.get("decision") == "limited":
            out[r.labels["rule"]] = out.get(r.labels["rule"], 0.0) + r.value
    return out


def overview_of(found: list[Reading], at: float, unreachable: list[str]) -> Overview:
    """The overview from every component's readings (pure: the parsing is tested alone)."""
    latency = order_latency(found)
    return Overview(
        at=at,
        transactions=summed(found, "paxmart_transactions_total", "mode", "outcome"),
        order_latency=[b for b in latency if math.isfinite(b[0])],
        orders_timed=latency[-1][1] if latency else 0.0,
        limited=sum(
            r.value
            for r in named(found, "paxmart_http_requests_total")
            if r.labels.get("component") == "gateway" and r.labels.get("status") == "429"
        ),
        cache=summed(found, "paxmart_gateway_cache_total", "outcome"),
        breakers=breakers(found),
        outbox_lag_s=summed(found, "paxmart_outbox_lag_seconds", "component"),
        queues=summed(found, "paxmart_queue_messages", "queue"),
        dead_letters=summed(found, "paxmart_dead_letters", "component"),
        rules_limited=rules_limited(found),
        audit=last_audit(found),
        unreachable=unreachable,
    )


def named(found: list[Reading], name: str) -> list[Reading]:
    return [r for r in found if r.name == name]


def summed(found: list[Reading], name: str, *by: str) -> dict[str, float]:
    """The readings of `name` added up by the values of the labels `by`."""
    out: dict[str, float] = {}
    for r in named(found, name):
        key = " ".join(r.labels.get(label, "") for label in by)
        out[key] = out.get(key, 0.0) + r.value
    return out


def order_latency(found: list[Reading]) -> list[tuple[float, float]]:
    """The gateway's order placement latency histogram: (upper bound, total) per bucket."""
    buckets: dict[float, float] = {}
    for r in named(found, "paxmart_http_request_seconds_bucket"):
        if r.labels.get("component") == "gateway" and r.labels.get("route") == ORDER_ROUTE:
            le = float(r.labels["le"])
            buckets[le] = buckets.get(le, 0.0) + r.value
    return sorted(buckets.items())


def breakers(found: list[Reading]) -> dict[str, str]:
    """Each upstream's breaker as the gateway last reported it (closed until it moves)."""
    states = {name: BREAKER_STATES[0] for name in UPSTREAMS}
    for r in named(found, "paxmart_gateway_breaker_state"):
        index = min(max(int(r.value), 0), len(BREAKER_STATES) - 1)
        states[r.labels["upstream"]] = BREAKER_STATES[index]
    return states


def last_audit(found: list[Reading]) -> LastAudit | None:
    values = {r.name: r.value for r in found if r.name.startswith("paxmart_audit_")}
    finished = values.get("paxmart_audit_finished_timestamp_seconds", 0.0)
    if not finished:
        return None  # no audit since the coordinator started
    return LastAudit(
        values.get("paxmart_audit_ok") == 1.0,
        int(values.get("paxmart_audit_violations", 0)),
        finished,
    )


class Telemetry:
    """Reads every component's metrics at once, each bounded by `SCRAPE_TIMEOUT_S`."""

    def __init__(self, pool: Executor) -> None:
        self.pool = pool

    def overview(self, clients: Mapping[str, ServiceClient]) -> Overview:
        asked = {name: self.pool.submit(scrape, client) for name, client in clients.items()}
        found, unreachable = readings(own_metrics()), []
        for name, future in asked.items():
            answer = future.result()
            if answer is None:
                unreachable.append(name)
            else:
                found += answer
        return overview_of(found, time.time(), unreachable)


def scrape(client: ServiceClient) -> list[Reading] | None:
    """One component's readings; None when it does not answer."""
    try:
        reply = client.get_text("/metrics", timeout_s=SCRAPE_TIMEOUT_S)
    except ApiError:
        return None
    return parse(reply.body) if reply.ok else None
