"""Prometheus metrics: request rate and latency by route and status, on every component.

Under gunicorn each worker is a process; when PROMETHEUS_MULTIPROC_DIR is set (the
launcher sets it) `/metrics` aggregates all workers of the component.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prom_multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from paxkit.db import Database
from paxkit.logs import access_line

log = logging.getLogger(__name__)

REQUESTS = Counter(
    "paxmart_http_requests_total", "HTTP requests served", ["component", "route", "status"]
)
LATENCY = Histogram(
    "paxmart_http_request_seconds",
    "HTTP request latency",
    ["component", "route"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
TRANSACTIONS = Counter(
    "paxmart_transactions_total", "Global transactions by mode and outcome", ["mode", "outcome"]
)
BRANCH_CALLS = Counter(
    "paxmart_branch_calls_total",
    "Branch calls by branch, operation and outcome",
    ["branch", "op", "outcome"],
)
BRANCH_BATCH = Histogram(
    "paxmart_branch_batch_size",
    "Transactions per phase-2 request to a branch (grouped while one is in flight)",
    ["branch", "op"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 100),
)
RECOVERED = Counter(
    "paxmart_recovery_actions_total", "Transactions finished by recovery", ["action"]
)


def _registry() -> CollectorRegistry | None:
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return None
    registry = CollectorRegistry()
    prom_multiprocess.MultiProcessCollector(registry)
    return registry


def own_metrics() -> list[Metric]:
    """This component's metrics as `/metrics` serves them (every worker's, added up)."""
    registry = _registry()
    return list((registry or REGISTRY).collect())


def install_metrics(app: Flask, component: str) -> None:
    """Time every request and expose `/metrics`."""
    latency: dict[str, Any] = {}
    counts: dict[tuple[str, int], Any] = {}

    @app.before_request
    def _start_timer() -> None:
        g.paxmart_started = time.perf_counter()

    @app.after_request
    def _record(response: Response) -> Response:
        started = getattr(g, "paxmart_started", None)
        if started is None:
            return response
        req = request._get_current_object()  # type: ignore[attr-defined]
        route = req.url_rule.rule if req.url_rule else "unmatched"
        status = response.status_code
        elapsed = time.perf_counter() - started
        if route not in latency:  # labelled children, looked up once per route
            latency[route] = LATENCY.labels(component, route)
        if (route, status) not in counts:
            counts[(route, status)] = REQUESTS.labels(component, route, str(status))
        latency[route].observe(elapsed)
        counts[(route, status)].inc()
        access_line(req.method, req.path, status, elapsed * 1000)
        return response

    @app.get("/metrics")
    def metrics() -> Any:
        registry = _registry()
        payload = generate_latest(registry) if registry else generate_latest()
        gauges = CollectorRegistry(auto_describe=False)
        gauges.register(_ScrapeTime(app.extensions.get("paxmart.gauges", [])))
        return Response(payload + generate_latest(gauges), content_type=CONTENT_TYPE_LATEST)


Probe = Callable[[], Iterable[Metric]]


class _ScrapeTime(Collector):
    """Gauges computed when scraped (backlogs, lags, queue depths), from a component's probes."""

    def __init__(self, probes: list[Probe]) -> None:
        self.probes = probes

    def collect(self) -> Iterable[Metric]:
        for probe in self.probes:
            try:
                yield from probe()
            except Exception as err:  # a broken probe must not break the scrape
                log.warning("metrics probe %s failed: %r", getattr(probe, "__name__", probe), err)


def outbox_probe(component: str, db: Database) -> Probe:
    """Unsent events and the age of the oldest: the outbox relay's lag."""

    def probe() -> Iterable[Metric]:
        row = db.fetch_one(
            "SELECT count(*) AS n, COALESCE(extract(epoch FROM now() - min(created_at)), 0) AS lag "
            "FROM outbox WHERE sent_at IS NULL"
        ) or {"n": 0, "lag": 0}
        unsent = GaugeMetricFamily(
            "paxmart_outbox_unsent", "Events not relayed yet", labels=["component"]
        )
        unsent.add_metric([component], float(row["n"]))
        lag = GaugeMetricFamily(
            "paxmart_outbox_lag_seconds", "Age of the oldest unsent event", labels=["component"]
        )
        lag.add_metric([component], float(row["lag"]))
        return [unsent, lag]

    return probe
