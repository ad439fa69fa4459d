"""Tracing and metrics: one trace id through every component's logs; Prometheus metrics."""

from __future__ import annotations

import secrets
from functools import partial

import pytest
import requests

from tests.helpers import wait_until

COMPONENTS = ("gateway", "order", "coordinator", "inventory", "coupon", "redpacket")


@pytest.mark.parametrize("mode", ["2pc", "msg"])
def test_one_trace_id_follows_the_order_through_every_component(api, stack, user, mode):
    trace_id = secrets.token_hex(16)
    response = api.order(
        {
            "user_id": user,
            "items": [{"sku": "SKU-0033", "qty": 1}],
            "coupon_id": f"C-{user}-1",
            "red_packet_cents": 10,
            "mode": mode,
        },
        headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"},
    )
    assert response.status_code in (201, 202), response.text
    assert response.headers["traceparent"].split("-")[1] == trace_id
    api.settled(response.json()["order_id"])
    for name in COMPONENTS:
        wait_until(
            partial(lambda n: trace_id in component_logs(stack, n), name),
            timeout_s=20,
            what=f"trace {trace_id} in the {name} logs",
        )


def component_logs(stack, name: str) -> str:
    """What a component's web and worker processes logged (msg work runs in the worker)."""
    return "".join(stack.log_file(n).read_text() for n in (name, f"{name}-worker"))


def test_a_request_without_traceparent_gets_one(api):
    header = api.get("/healthz").headers["traceparent"]
    version, trace_id, span_id, flags = header.split("-")
    assert (version, len(trace_id), len(span_id), flags) == ("00", 32, 16, "01")


def metric_value(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    wanted = {f'{k}="{v}"' for k, v in labels.items()}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            label_part = line[line.find("{") + 1 : line.find("}")] if "{" in line else ""
            if wanted <= set(label_part.split(",")):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_requests_transactions_and_backlogs(api, stack, user):
    assert api.order({"user_id": user, "items": [{"sku": "SKU-0034", "qty": 1}]}).status_code == 201
    coordinator = requests.get(stack.url("coordinator") + "/metrics", timeout=10)
    assert coordinator.status_code == 200
    assert coordinator.headers["Content-Type"].startswith("text/plain")
    text = coordinator.text
    assert metric_value(text, "paxmart_transactions_total", mode="2pc", outcome="committed") >= 1
    assert (
        metric_value(
            text,
            "paxmart_http_requests_total",
            component="coordinator",
            route="/transactions",
            status="200",
        )
        >= 1
    )
    assert "paxmart_transactions_unfinished" in text
    assert "paxmart_outbox_lag_seconds" in text
    assert 'paxmart_queue_messages{queue="' in text
    for name in ("order", "inventory"):
        body = requests.get(stack.url(name) + "/metrics", timeout=10).text
        assert metric_value(body, "paxmart_http_requests_total", component=name) >= 1
        assert "paxmart_outbox_unsent" in body
