"""Public API routes: each one forwards to the service that owns the data."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, current_app, request

from gateway.upstreams import segment
from paxkit.errors import ApiError
from paxkit.http import Reply, ServiceClient
from paxkit.requests_json import json_body

api = Blueprint("api", __name__, url_prefix="/api")

PASSED_HEADERS = ("Location", "Retry-After")
# Static fallback for the non-core hot list when it can't be computed (服务降级).
FALLBACK_RECOMMENDATIONS = [f"SKU-{n:04d}" for n in range(1, 11)]


def upstream(name: str) -> ServiceClient:
    client: ServiceClient = current_app.extensions["paxmart.upstreams"][name]
    return client


def relay(reply: Reply) -> Response:
    """The upstream's answer, as it is, to the client."""
    response = Response(json.dumps(reply.body), status=reply.status, mimetype="application/json")
    for header in PASSED_HEADERS:
        if header in reply.headers:
            response.headers[header] = reply.headers[header]
    return response


@api.get("/products")
def list_products() -> Response:
    return relay(upstream("inventory").get("/products"))


@api.get("/products/<sku>")
def get_product(sku: str) -> Response:
    return relay(upstream("inventory").get(f"/products/{segment(sku)}"))


@api.get("/users/<user_id>/wallet")
def get_wallet(user_id: str) -> Response:
    return relay(upstream("redpacket").get(f"/users/{segment(user_id)}/wallet"))


@api.get("/users/<user_id>/coupons")
def list_coupons(user_id: str) -> Response:
    return relay(upstream("coupon").get(f"/users/{segment(user_id)}/coupons"))


@api.get("/users/<user_id>/orders")
def list_orders(user_id: str) -> Response:
    return relay(
        upstream("order").get(f"/users/{segment(user_id)}/orders", params=request.args.to_dict())
    )


@api.get("/orders/<order_id>")
def get_order(order_id: str) -> Response:
    return relay(upstream("order").get(f"/orders/{segment(order_id)}"))


@api.post("/orders")
def place_order() -> Response:
    body = json_body()
    settings = current_app.extensions["paxmart.settings"]
    return relay(
        upstream("order").post("/orders", json=body, timeout_s=settings.txn_timeout_s + 5.0)
    )


@api.get("/recommendations")
def recommendations() -> Any:
    """The best sellers; a static list (marked degraded) when inventory can't answer."""
    try:
        reply = upstream("inventory").get("/products/top", params={"limit": 10}, timeout_s=1.0)
        if reply.ok:
            return {"items": reply.body["items"], "degraded": False}
    except ApiError:
        pass
    return {"items": [{"sku": sku} for sku in FALLBACK_RECOMMENDATIONS], "degraded": True}
