"""The naive baseline's pure parts: the outcome of an order's parts, the mode's refusal, its
setting, and the bench report's shares of the baseline."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from infra.bench.report import baseline_rows
from paxkit.config import load_settings
from paxkit.http import ServiceClient
from paxkit.naive import NaiveParts, PartResult, first_rejection
from services.order.domain import parse_order_request
from services.order.placement import naive_refused

pytestmark = pytest.mark.unit


def test_every_part_applied_is_no_rejection():
    assert first_rejection([PartResult("inventory", True), PartResult("redpacket", True)]) is None


def test_the_first_part_that_did_not_apply_gives_the_reason_in_declared_order():
    results = [
        PartResult("inventory", True),
        PartResult("coupon", False, "coupon_unavailable"),
        PartResult("redpacket", False, "insufficient_balance"),
    ]
    assert first_rejection(results) == "coupon_unavailable"
    assert first_rejection([PartResult("coupon", False)]) == "aborted"


def test_a_part_with_no_answer_counts_as_a_timeout_and_is_tried_once():
    """Port 9 on loopback refuses: nothing is retried (a retry could apply a part twice)."""
    dead = {n: ServiceClient(n, "http://127.0.0.1:9", 0.5) for n in ("inventory", "coupon")}
    with ThreadPoolExecutor(2) as pool:
        results = NaiveParts(dead, pool).apply("gtx-unit", {"inventory": {}, "coupon": {}})
    assert results == [
        PartResult("inventory", False, "timeout"),
        PartResult("coupon", False, "timeout"),
    ]


def test_naive_is_a_mode_the_request_may_name():
    body = {"user_id": 7, "items": [{"sku": "SKU-0001", "qty": 1}], "mode": "naive"}
    assert parse_order_request(body).mode == "naive"


def test_the_refusal_is_the_contracts_unsupported_mode():
    refused = naive_refused()
    assert (refused.status, refused.code) == (400, "unsupported_mode")
    assert refused.body()["error"]["field"] == "mode"


def test_the_setting_is_off_unless_enabled(monkeypatch):
    monkeypatch.delenv("PAXMART_NAIVE_MODE", raising=False)
    assert load_settings().naive_mode is False
    monkeypatch.setenv("PAXMART_NAIVE_MODE", "1")
    assert load_settings().naive_mode is True


def measured(rate: float) -> dict[str, object]:
    return {"available": True, "orders_per_s": rate}


def test_the_report_shows_each_synchronous_mode_as_a_share_of_the_baseline():
    orders = {
        "modes": {
            "naive": measured(200.0),
            "2pc": measured(110.0),
            "tcc": measured(100.0),
            "msg": {"available": True, "accepted_per_s": 400.0},
        }
    }
    rows = {row.what: row for row in baseline_rows(orders)}
    assert set(rows) == {"order 2pc / naive", "order tcc / naive"}
    assert rows["order 2pc / naive"].ratio == pytest.approx(0.55)
    assert rows["order 2pc / naive"].failures() == ["order 2pc / naive: ratio below 0.6"]
    assert rows["order tcc / naive"].ratio == pytest.approx(0.5)
    assert rows["order tcc / naive"].failures() == [], "tcc has no target of its own"


def test_without_the_baseline_in_the_run_there_is_no_share_and_unmeasured_it_is_a_miss():
    assert baseline_rows({"modes": {"2pc": measured(130.0)}}) == []
    rows = baseline_rows({"modes": {"naive": {"available": False}, "2pc": measured(130.0)}})
    assert [row.limit for row in rows] == [None]
    assert rows[0].failures()
