"""Prometheus metrics: request rate and latency by route and status, on every component.

Under gunicorn each worker is a process; when PROMETHEUS_MULTIPROC_DIR is set (the
launcher sets it) `/metrics` aggregates all workers of the component.
"""

from __future__ import annotations

import os
import time
from typing import Any

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prom_multiprocess

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
RECOVERED = Counter(
    "paxmart_recovery_actions_total", "Transactions finished by recovery", ["action"]
)


def _registry() -> CollectorRegistry | None:
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return None
    registry = CollectorRegistry()
    prom_multiprocess.MultiProcessCollector(registry)
    return registry


def install_metrics(app: Flask, component: str) -> None:
    """Time every request and expose `/metrics`."""

    @app.before_request
    def _start_timer() -> None:
        g.paxmart_started = time.perf_counter()

    @app.after_request
    def _record(response: Response) -> Response:
        started = getattr(g, "paxmart_started", None)
        if started is not None:
            route = request.url_rule.rule if request.url_rule else "unmatched"
            LATENCY.labels(component, route).observe(time.perf_counter() - started)
            REQUESTS.labels(component, route, str(response.status_code)).inc()
        return response

    @app.get("/metrics")
    def metrics() -> Any:
        registry = _registry()
        payload = generate_latest(registry) if registry else generate_latest()
        return Response(payload, mimetype=CONTENT_TYPE_LATEST)
