"""Hops and SQL statements per order, read from every component's own /metrics.

A hop is an HTTP request a component served (`paxmart_http_requests_total`); the
gateway's are the orders themselves, so the hops of an order are the requests every
other component served while it ran. Statements are `paxmart_sql_statements_total`: every
statement a component's processes sent (web and worker add up in its /metrics), BEGIN and
COMMIT not counted. Both are differences of two snapshots, divided by the orders placed
in between.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import requests
from prometheus_client.parser import text_string_to_metric_families

REQUESTS = "paxmart_http_requests"
STATEMENTS = "paxmart_sql_statements"
ENTRY = "gateway"


@dataclass(frozen=True)
class Counts:
    """Requests served and statements sent, per component, at one moment."""

    requests: dict[str, float] = field(default_factory=dict)
    statements: dict[str, float] = field(default_factory=dict)


def totals(metrics_text: str) -> tuple[float, float]:
    """(requests served, statements sent) in one component's /metrics text."""
    served = sent = 0.0
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == f"{REQUESTS}_total" and sample.labels.get("route") != "/metrics":
                served += sample.value
            elif sample.name == f"{STATEMENTS}_total":
                sent += sample.value
    return served, sent


def snapshot(urls: dict[str, str]) -> Counts:
    counts = Counts()
    for name, url in urls.items():
        reply = requests.get(f"{url}/metrics", timeout=10)
        reply.raise_for_status()
        counts.requests[name], counts.statements[name] = totals(reply.text)
    return counts


def per_order(before: Counts, after: Counts, orders: int) -> dict[str, object]:
    """Hops (requests beyond the gateway's own) and statements per order, by component."""
    n = max(1, orders)

    def delta(table: str, names: Iterable[str]) -> dict[str, float]:
        old, new = getattr(before, table), getattr(after, table)
        return {name: round((new[name] - old.get(name, 0.0)) / n, 2) for name in names}

    hops = delta("requests", [name for name in after.requests if name != ENTRY])
    statements = delta("statements", after.statements)
    return {
        "hops": round(sum(hops.values()), 2),
        "hops_by_component": hops,
        "sql_statements": round(sum(statements.values()), 2),
        "sql_statements_by_component": statements,
    }
