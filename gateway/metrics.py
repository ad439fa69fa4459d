"""Prometheus metrics of the gateway's protections (served by paxkit's /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CACHE = Counter(
    "paxmart_gateway_cache_total",
    "Product read cache lookups by outcome (hit, miss, stale, bypass)",
    ["outcome"],
)
RATELIMIT = Counter(
    "paxmart_gateway_ratelimit_total",
    "Rate limiter decisions by rule, decision and where the token came from "
    "(redis, lease: taken from Redis earlier, local: Redis down)",
    ["rule", "decision", "source"],
)
BREAKER_STATE = Gauge(
    "paxmart_gateway_breaker_state",
    "Circuit breaker state per upstream: 0 closed, 1 half-open, 2 open",
    ["upstream"],
    multiprocess_mode="mostrecent",
)
BREAKER_TRANSITIONS = Counter(
    "paxmart_gateway_breaker_transitions_total",
    "Circuit breaker state changes per upstream and new state",
    ["upstream", "state"],
)
SWITCH_ON = Gauge(
    "paxmart_gateway_switch_on",
    "Degradation switches as set by hand or by the level (1 on, 0 off)",
    ["switch"],
    multiprocess_mode="mostrecent",
)
IDEMPOTENCY = Counter(
    "paxmart_gateway_idempotency_total",
    "Idempotency-Key outcomes (new, replay, mismatch, in_progress, unavailable)",
    ["outcome"],
)
