"""Every read endpoint of API.md through the gateway, and the contract's error shape."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import ADMIN
from tests.helpers import as_user


def error_code(response) -> str:
    body = response.json()
    assert set(body) >= {"error"}, body
    assert {"code", "message"} <= set(body["error"])
    return str(body["error"]["code"])


def test_health_and_readiness(api):
    assert api.get("/healthz").json()["status"] == "ok"
    ready = api.get("/readyz")
    assert ready.status_code == 200, ready.text


def test_products_are_seeded_with_price_and_stock(api):
    items = api.get("/api/products").json()["items"]
    assert len(items) == 100
    by_sku = {p["sku"]: p for p in items}
    assert by_sku["SKU-0100"]["price_cents"] == 10000
    assert by_sku["SKU-0007"]["price_cents"] == 700
    assert set(by_sku["SKU-0001"]) == {"sku", "name", "price_cents", "stock"}


def test_one_product_and_unknown_sku(api):
    product = api.product("SKU-0099")
    assert (product["sku"], product["price_cents"]) == ("SKU-0099", 9900)
    missing = api.get("/api/products/SKU-9999")
    assert missing.status_code == 404
    assert error_code(missing) == "product_not_found"


def test_seeded_wallet_and_coupons(api):
    assert api.wallet(999) == {"user_id": 999, "balance_cents": 100000, "frozen_cents": 0}
    coupons = api.get("/api/users/999/coupons").json()["items"]
    assert [
        (c["coupon_id"], c["discount_cents"], c["min_spend_cents"], c["status"]) for c in coupons
    ] == [
        ("C-999-1", 500, 1000, "available"),
        ("C-999-2", 1000, 5000, "available"),
        ("C-999-3", 3000, 20000, "available"),
    ]


def test_unknown_user_and_order(api, user):
    # No login knows user 5000: a token signed with the stack's key stands for one whose
    # user is gone, so what is tested is the services' answer.
    ghost = as_user(5000)
    assert api.get("/api/users/5000/wallet", headers=ghost).status_code == 404
    missing = api.get("/api/orders/ord-nope", headers=api.as_user(user))
    assert missing.status_code == 404
    assert error_code(missing) == "order_not_found"
    assert api.get("/api/users/5000/orders", headers=ghost).json() == {"items": []}


@pytest.mark.parametrize(
    "path",
    [
        "/api/users/abc/wallet",
        "/api/users/0/coupons",
        "/api/users/-1/orders",
        "/api/users/99999999999/wallet",
    ],
)
def test_bad_user_id_is_400_naming_the_field(api, user, path):
    response = api.get(path, headers=api.as_user(user))
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "user_id"


def test_recommendations_are_a_hot_list(api):
    body = api.get("/api/recommendations").json()
    assert body["degraded"] is False
    assert 1 <= len(body["items"]) <= 10


def test_unknown_route_and_method(api):
    assert error_code(api.get("/api/nothing-here")) == "not_found"
    response = api.http.delete(api.base_url + "/api/products")
    assert response.status_code == 405
    assert error_code(response) == "method_not_allowed"


def test_non_json_body_is_415(api, user):
    headers = {"Content-Type": "text/plain", **api.as_user(user)}
    response = api.post("/api/orders", data="user_id=7", headers=headers)
    assert response.status_code == 415
    assert error_code(response) == "unsupported_media_type"


@pytest.mark.parametrize("raw", ["{", "[1, 2]", "null", '"text"'])
def test_malformed_or_non_object_json_is_400(api, user, raw):
    headers = {"Content-Type": "application/json", **api.as_user(user)}
    response = api.post("/api/orders", data=raw, headers=headers)
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "body"


def test_body_over_one_megabyte_is_413(api, user):
    blob = '{"pad": "' + "x" * (1024 * 1024 + 10) + '"}'
    headers = {"Content-Type": "application/json", **api.as_user(user)}
    response = api.post("/api/orders", data=blob, headers=headers)
    assert response.status_code == 413
    assert error_code(response) == "payload_too_large"


def test_invalid_order_is_400_with_field_and_nothing_recorded(api, user):
    response = api.order({"user_id": user, "items": [{"sku": "SKU-0001", "qty": 0}]})
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "items[0].qty"
    assert api.get(f"/api/users/{user}/orders").json()["items"] == []


def test_unknown_mode_is_invalid(api, user):
    response = api.order({"user_id": user, "items": [{"sku": "SKU-0001", "qty": 1}], "mode": "4pc"})
    assert response.status_code == 400
    assert (error_code(response), response.json()["error"]["field"]) == ("invalid_mode", "mode")


def test_notify_url_must_be_http_to_an_allowed_host(api, user):
    for url in ("ftp://127.0.0.1/x", "http://example.com/hook"):
        response = api.order(
            {"user_id": user, "items": [{"sku": "SKU-0001", "qty": 1}], "notify_url": url}
        )
        assert response.status_code == 400
        assert response.json()["error"]["field"] == "notify_url"


def test_admin_needs_the_token(api):
    assert api.get("/admin/audit").status_code == 401
    assert api.get("/admin/audit", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert api.get("/admin/transactions", headers=ADMIN).status_code == 200
