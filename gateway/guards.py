"""Checks every request passes before its route runs: crawler block, the caller's token on
user-scoped routes, rate limit (keyed by that caller), read-only."""

from __future__ import annotations

from flask import Flask, Response, g, request

from gateway.clients import client_id
from gateway.core import Gateway, current_gateway
from gateway.identity import authenticate, check_path_owner, optional_caller, user_scoped
from gateway.ratelimit import RateLimited, Rule
from gateway.routes import cache_name
from gateway.switches import BOT_USER_AGENT
from paxkit.errors import ApiError

AUTH_PREFIX = "/api/auth/"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Routes whose empty answer is an empty list rather than an empty object.
LIST_ROUTES = frozenset(
    {
        "/api/products",
        "/api/users/<user_id>/coupons",
        "/api/users/<user_id>/orders",
        "/api/recommendations",
    }
)


def install(app: Flask) -> None:
    app.before_request(protect)
    app.after_request(ratelimit_headers)


def protect() -> Response | None:
    gateway = current_gateway()
    on_api = request.path.startswith("/api/")
    if on_api and gateway.switch("crawler_block").on and is_bot():
        return empty_answer()
    template = request.url_rule.rule if request.url_rule is not None else None
    if user_scoped(template):
        check_path_owner(authenticate(gateway.signer), request.view_args)
    elif on_api:
        optional_caller(gateway.signer)
    rules = gateway.control.snapshot.rules_for(template, request.path)
    if rules:
        limit(gateway, rules, template)
    writes = on_api and template is not None and request.method in WRITE_METHODS
    writes = writes and not (template or "").startswith(AUTH_PREFIX)  # reads need a login
    if writes and gateway.switch("read_only").on:
        raise ApiError(
            "The shop is read-only for now; writes are paused.",
            code="read_only",
            status=503,
            headers={"Retry-After": str(gateway.options.degraded_retry_after_s)},
        )
    return None


def limit(gateway: Gateway, rules: tuple[Rule, ...], template: str | None) -> None:
    """Take the request's tokens; a cached read's lookup rides along in the same round trip."""
    client = client_id()
    name = cache_name(template, request.view_args)
    along = gateway.cache.lookup_keys(name, client) if name else []
    decision, values = gateway.limiter.check(rules, client, read_along=along)
    if not decision.allowed:
        raise RateLimited(decision)  # the 429 carries the RateLimit headers itself
    g.ratelimit = decision
    if values is not None:
        g.cache_lookup = values


def ratelimit_headers(response: Response) -> Response:
    decision = g.get("ratelimit")
    if decision is not None:
        response.headers.extend(decision.headers())
    return response


def is_bot() -> bool:
    return bool(BOT_USER_AGENT.search(request.headers.get("User-Agent", "")))


def empty_answer() -> Response:
    """What a blocked crawler gets: a 200 with nothing in it."""
    rule = request.url_rule.rule if request.url_rule is not None else ""
    body = '{"items": []}' if rule in LIST_ROUTES else "{}"
    return Response(body, status=200, mimetype="application/json")
