"""The bench's hop and statement counts, from /metrics text."""

from __future__ import annotations

from infra.bench.counts import Counts, per_order, totals

METRICS = """\
# HELP paxmart_http_requests_total HTTP requests served
# TYPE paxmart_http_requests_total counter
paxmart_http_requests_total{component="inventory",route="/xa/<op>",status="200"} 30.0
paxmart_http_requests_total{component="inventory",route="/metrics",status="200"} 7.0
paxmart_http_requests_total{component="inventory",route="/products",status="200"} 10.0
# HELP paxmart_sql_statements_total SQL statements sent to a database
# TYPE paxmart_sql_statements_total counter
paxmart_sql_statements_total 120.0
"""


def test_totals_count_served_requests_but_not_the_scrapes_and_every_statement():
    assert totals(METRICS) == (40.0, 120.0)


def test_per_order_counts_the_requests_behind_the_gateway_only():
    before = Counts({"gateway": 0.0, "order": 0.0, "coordinator": 5.0}, {"order": 10.0})
    after = Counts({"gateway": 10.0, "order": 10.0, "coordinator": 25.0}, {"order": 50.0})
    counts = per_order(before, after, orders=10)
    assert counts["hops"] == 3.0  # order 1 + coordinator 2 per order
    assert counts["hops_by_component"] == {"order": 1.0, "coordinator": 2.0}
    assert counts["sql_statements"] == 4.0
