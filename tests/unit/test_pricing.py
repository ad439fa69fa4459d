"""Order validation and pricing rules (API.md), no servers."""

from __future__ import annotations

from typing import Any

import pytest

from paxkit.errors import InvalidInput
from services.order.domain import (
    CouponTerms,
    PricingRejected,
    parse_order_request,
    price_order,
)

PRICES = {"SKU-0003": 300, "SKU-0050": 5000, "SKU-0100": 10000}


def request(**overrides: Any):
    body = {"user_id": 7, "items": [{"sku": "SKU-0003", "qty": 2}], **overrides}
    return parse_order_request(body)


def coupon(**overrides: Any) -> CouponTerms:
    terms = {
        "coupon_id": "C-7-2",
        "user_id": 7,
        "discount_cents": 1000,
        "min_spend_cents": 5000,
        "status": "available",
        **overrides,
    }
    return CouponTerms(**terms)


def test_defaults_are_2pc_no_coupon_no_red_packet():
    parsed = request()
    assert (parsed.mode, parsed.coupon_id, parsed.red_packet_cents) == ("2pc", None, 0)


def test_total_is_sum_of_price_times_qty():
    parsed = request(items=[{"sku": "SKU-0003", "qty": 2}, {"sku": "SKU-0050", "qty": 1}])
    pricing = price_order(parsed, PRICES, None)
    assert pricing.total_cents == 2 * 300 + 5000
    assert pricing.payable_cents == 5600


def test_coupon_applies_at_min_spend_and_red_packet_comes_off_last():
    parsed = request(items=[{"sku": "SKU-0050", "qty": 1}], coupon_id="C-7-2", red_packet_cents=400)
    pricing = price_order(parsed, PRICES, coupon())
    assert (pricing.total_cents, pricing.discount_cents, pricing.payable_cents) == (
        5000,
        1000,
        3600,
    )


def test_coupon_below_min_spend_does_not_apply():
    pricing = price_order(request(coupon_id="C-7-2"), PRICES, coupon())
    assert (pricing.total_cents, pricing.discount_cents, pricing.payable_cents) == (600, 0, 600)


@pytest.mark.parametrize(
    "terms", [None, {"user_id": 8}, {"status": "used"}, {"status": "reserved"}]
)
def test_coupon_missing_foreign_or_taken_is_unavailable(terms):
    parsed = request(items=[{"sku": "SKU-0100", "qty": 1}], coupon_id="C-7-2")
    with pytest.raises(PricingRejected) as err:
        price_order(parsed, PRICES, None if terms is None else coupon(**terms))
    assert err.value.reason == "coupon_unavailable"


def test_an_unknown_sku_is_rejected_and_stock_is_left_to_the_inventory_branch():
    with pytest.raises(PricingRejected) as unknown:
        price_order(request(items=[{"sku": "SKU-9999", "qty": 1}]), PRICES, None)
    assert unknown.value.reason == "unknown_sku"
    many = price_order(request(items=[{"sku": "SKU-0100", "qty": 1000}]), PRICES, None)
    assert many.total_cents == 1000 * 10000


def test_red_packet_larger_than_what_is_left_to_pay_is_invalid():
    with pytest.raises(InvalidInput) as err:
        price_order(request(red_packet_cents=601), PRICES, None)
    assert err.value.extra["field"] == "red_packet_cents"
    assert price_order(request(red_packet_cents=600), PRICES, None).payable_cents == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"items": [{"sku": "SKU-0001", "qty": 1}]}, "user_id"),
        ({"user_id": "7", "items": [{"sku": "SKU-0001", "qty": 1}]}, "user_id"),
        ({"user_id": True, "items": [{"sku": "SKU-0001", "qty": 1}]}, "user_id"),
        ({"user_id": 0, "items": [{"sku": "SKU-0001", "qty": 1}]}, "user_id"),
        ({"user_id": 7, "items": []}, "items"),
        ({"user_id": 7, "items": "SKU-0001"}, "items"),
        ({"user_id": 7, "items": [{"sku": "SKU-0001", "qty": 0}]}, "items[0].qty"),
        ({"user_id": 7, "items": [{"sku": "SKU-0001", "qty": 1.5}]}, "items[0].qty"),
        ({"user_id": 7, "items": [{"sku": "bad sku!", "qty": 1}]}, "items[0].sku"),
        ({"user_id": 7, "items": [{"sku": "SKU-0001", "qty": 1, "x": 1}]}, "items[0].x"),
        (
            {"user_id": 7, "items": [{"sku": "SKU-0001", "qty": 1}, {"sku": "SKU-0001", "qty": 1}]},
            "items[1].sku",
        ),
        ({"user_id": 7, "items": [{"sku": "SKU-0001", "qty": 1}], "mode": "4pc"}, "mode"),
        (
            {"user_id": 7, "items": [{"sku": "SKU-0001", "qty": 1}], "red_packet_cents": -1},
            "red_packet_cents",
        ),
        ({"user_id": 7, "items": [{"sku": "SKU-0001", "qty": 1}], "coupon_id": 12}, "coupon_id"),
        (
            {"user_id": 7, "items": [{"sku": "SKU-0001", "qty": 1}], "notify_url": "ftp://x"},
            "notify_url",
        ),
        ({"user_id": 7, "items": [{"sku": "SKU-0001", "qty": 1}], "coupon": "C-7-1"}, "coupon"),
    ],
)
def test_invalid_requests_name_the_offending_field(body, field):
    with pytest.raises(InvalidInput) as err:
        parse_order_request(body)
    assert err.value.status == 400
    assert err.value.extra["field"] == field


def test_notify_url_accepts_http_and_https():
    assert request(notify_url="http://127.0.0.1:9/cb").notify_url == "http://127.0.0.1:9/cb"
    assert request(notify_url="https://shop.example/cb").notify_url == "https://shop.example/cb"
