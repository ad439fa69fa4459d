"""Public API routes: each one forwards to the service that owns the data.

Product reads go through the read cache; order placement through the degradation
switches, idempotency keys and the order service's breaker. User-scoped routes run with
the caller the guards authenticated (gateway/identity.py); the login issues the tokens.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, g, request

from gateway.breaker import CircuitOpen
from gateway.cache import Entry, Served
from gateway.clients import client_id
from gateway.core import PRODUCTS, Gateway, current_gateway, product_name
from gateway.idempotency import HEADER, Stored, validate_key
from gateway.identity import (
    USER_HEADER,
    Caller,
    check_owner,
    forbidden,
    require_signer,
    token_body,
)
from gateway.ratelimit import RateLimited, Rule
from gateway.switches import SwitchState
from gateway.upstreams import Upstream, segment
from paxkit.errors import (
    ApiError,
    InvalidCredentials,
    OutcomeUnknown,
    UpstreamNotReached,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from paxkit.http import Reply
from paxkit.requests_json import json_body
from paxkit.validation import SKU_PATTERN

api = Blueprint("api", __name__, url_prefix="/api")

PASSED_HEADERS = ("Location", "Retry-After")
# The order id the gateway assigns; the order service places the order under it.
ORDER_ID_HEADER = "X-Order-Id"
# Static fallback for the non-core hot list when it can't be computed (服务降级).
FALLBACK_RECOMMENDATIONS = [f"SKU-{n:04d}" for n in range(1, 11)]
MAX_ORDER_SKUS = 100
STALE_WARNING = '110 - "Response is Stale"'
# Brute force on the login: every user's password may be tried 10 times at once, then once
# a second, from anywhere (the per-address limit is the `login` rule of the control plane).
LOGIN_PER_USER = Rule("login_per_user", "/api/auth/token", 1.0, 10, "client")


def upstream(name: str) -> Upstream:
    return current_gateway().upstreams[name]


def relay(reply: Reply) -> Response:
    """The upstream's answer, as it is, to the client."""
    response = Response(json.dumps(reply.body), status=reply.status, mimetype="application/json")
    for header in PASSED_HEADERS:
        if header in reply.headers:
            response.headers[header] = reply.headers[header]
    return response


def entry_of(reply: Reply) -> Entry:
    return Entry(reply.status, json.dumps(reply.body).encode())


def inventory_loader(path: str) -> Callable[[], Entry]:
    """Loads one inventory read, for the cache to call on a miss."""
    return lambda: entry_of(upstream("inventory").get(path))


def serve(served: Served) -> Response:
    response = Response(served.entry.body, status=served.entry.status, mimetype="application/json")
    response.headers["X-Cache"] = served.outcome.upper()
    if served.outcome == "stale":
        response.headers["Warning"] = STALE_WARNING
    return response


def cache_name(template: str | None, args: dict[str, Any] | None) -> str | None:
    """The cache entry a request reads, if its route is cached (no key for non-SKUs)."""
    if template == "/api/products":
        return PRODUCTS
    if template == "/api/products/<sku>" and args and SKU_PATTERN.match(args["sku"]):
        return product_name(args["sku"])
    return None


def cached_read(path: str) -> Response:
    """Serve the request's cache entry; the limiter may have looked it up already (g)."""
    load = inventory_loader(path)
    cache = current_gateway().cache
    name = cache_name(request.url_rule.rule if request.url_rule else None, request.view_args)
    if name is None:
        return serve(cache.read_direct(load))
    return serve(cache.read(name, load, client_id(), g.get("cache_lookup")))


@api.get("/products")
def list_products() -> Response:
    return cached_read("/products")


@api.get("/products/<sku>")
def get_product(sku: str) -> Response:
    return cached_read(f"/products/{segment(sku)}")


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
    reply = upstream("order").get(f"/orders/{segment(order_id)}")
    if reply.ok and reply.body.get("user_id") != caller().user_id:
        raise forbidden()  # nothing of another user's order is revealed
    return relay(reply)


def caller() -> Caller:
    """The caller the guards authenticated (every route calling this is user-scoped)."""
    found: Caller | None = g.get("caller")
    assert found is not None, "a user-scoped route runs only after authentication"
    return found


@api.post("/auth/token")
def issue_token() -> Any:
    """A user's credentials for a short-lived signed token (the order service checks them)."""
    gateway = current_gateway()
    signer = require_signer(gateway.signer)
    body = json_body()
    user_id, password = body.get("user_id"), body.get("password")
    limit_login(gateway, user_id)
    reply = gateway.upstreams["order"].post(
        "/credentials/check", json={"user_id": user_id, "password": password}
    )
    if reply.status == 401:
        raise InvalidCredentials("Unknown user or wrong password.")
    if not reply.ok:
        return relay(reply)
    return token_body(signer.issue(str(reply.body["user_id"])))


@api.post("/auth/refresh")
def refresh_token() -> Any:
    """A fresh token for the caller of a token that is still valid (an expired one: log in)."""
    return token_body(require_signer(current_gateway().signer).issue(str(caller().user_id)))


def limit_login(gateway: Gateway, user_id: Any) -> None:
    """The per-user bucket of the login, so many addresses cannot try one user's password."""
    if isinstance(user_id, int) and not isinstance(user_id, bool):
        decision, _ = gateway.limiter.check((LOGIN_PER_USER,), f"login-user:{user_id}")
        if not decision.allowed:
            raise RateLimited(decision)


@api.post("/orders")
def place_order() -> Response:
    """Forward an order under an order id the gateway assigns (the key's, when it has one),
    so an answer lost on the way back can name the order, and a retry can never place it
    twice."""
    gateway = current_gateway()
    waiting = gateway.switch("waiting_room")
    if waiting.on:
        raise waiting_room(gateway, waiting)
    body = json_body()
    check_owner(caller(), body.get("user_id"))
    key = validate_key(request.headers.get(HEADER))
    order_id = new_order_id()
    claim = gateway.idempotency.begin(key, body, order_id) if key else None
    if isinstance(claim, Stored):
        return replay(claim)
    if claim is not None:
        order_id = claim.order_id
    names, client = order_cache_names(body), client_id()
    own_reads_s = gateway.options.cache.own_reads_s
    gateway.cache.around_order(names, client, gateway.order_timeout_s + own_reads_s)
    reply: Reply | None = None
    try:
        reply = forward_order(gateway, body, order_id, force=waiting.manual)
        return relay(reply)
    except UpstreamNotReached:
        raise  # never sent: certainly no order
    except (UpstreamTimeout, UpstreamUnavailable) as err:  # sent, and no answer came back
        raise outcome_unknown(order_id, err) from err
    finally:
        gateway.cache.around_order(names, client, own_reads_s)
        if claim is not None:
            gateway.idempotency.settle(claim, stored_answer(reply))


def new_order_id() -> str:
    return f"ord-{secrets.token_hex(10)}"


def forward_order(gateway: Gateway, body: dict[str, Any], order_id: str, force: bool) -> Reply:
    headers = {ORDER_ID_HEADER: order_id, USER_HEADER: str(caller().user_id)}
    if gateway.switch("order_async").on:
        headers["Prefer"] = "respond-async"
    return gateway.upstreams["order"].post(
        "/orders", json=body, timeout_s=gateway.order_timeout_s, headers=headers, force=force
    )


def outcome_unknown(order_id: str, err: ApiError) -> OutcomeUnknown:
    """The order service got the order but its answer was lost: poll, or retry with the key."""
    location = order_location(order_id)
    return OutcomeUnknown(
        "The order may or may not have been recorded; follow its Location (or retry with "
        "the same Idempotency-Key) instead of ordering again.",
        status=504 if isinstance(err, UpstreamTimeout) else 503,
        headers={"Location": location},
        order_id=order_id,
        location=location,
    )


def order_location(order_id: str) -> str:
    return f"/api/orders/{order_id}"


def waiting_room(gateway: Gateway, state: SwitchState) -> ApiError:
    if state.source == "breaker":
        return CircuitOpen("order", gateway.upstreams["order"].breaker.retry_after_s())
    return ApiError(
        "Too many shoppers right now; please try again shortly.",
        code="waiting_room",
        status=503,
        headers={"Retry-After": str(gateway.options.degraded_retry_after_s)},
    )


def stored_answer(reply: Reply | None) -> Stored | None:
    if reply is None:
        return None
    return Stored(reply.status, reply.body, reply.headers.get("Location"))


def replay(stored: Stored) -> Response:
    response = Response(json.dumps(stored.body), status=stored.status, mimetype="application/json")
    if stored.location:
        response.headers["Location"] = stored.location
    response.headers["Idempotent-Replayed"] = "true"
    return response


def order_cache_names(body: dict[str, Any]) -> list[str]:
    """The cache entries an order may change: its products and the product list."""
    items = body.get("items")
    skus = {
        item["sku"]
        for item in (items if isinstance(items, list) else [])[:MAX_ORDER_SKUS]
        if isinstance(item, dict) and isinstance(item.get("sku"), str)
    }
    return [PRODUCTS, *(product_name(s) for s in sorted(skus) if SKU_PATTERN.match(s))]


@api.get("/recommendations")
def recommendations() -> Any:
    """The best sellers; a static list (marked degraded) when switched or failing."""
    state = current_gateway().switch("recommendations")
    if not state.on:
        try:
            reply = upstream("inventory").get(
                "/products/top", params={"limit": 10}, timeout_s=1.0, force=state.manual
            )
            if reply.ok:
                return {"items": reply.body["items"], "degraded": False}
        except ApiError:
            pass
    return {"items": [{"sku": sku} for sku in FALLBACK_RECOMMENDATIONS], "degraded": True}
