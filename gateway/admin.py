"""Admin API behind a bearer token: switches, level, rate limits, change log (the gateway's
own control plane) and audit, transactions and dead letters (served by the coordinator).

Changes are attributed to the `X-Actor` header (default `admin`) and the caller's
address in the change log (GET /admin/changes). The actions themselves live in
operations.py, which the dashboard (gateway/ui) shares.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from gateway import operations
from gateway.control import Actor
from gateway.core import current_gateway
from gateway.routes import relay
from paxkit.auth import require_bearer
from paxkit.errors import InvalidInput
from paxkit.requests_json import json_body, optional_json_body
from paxkit.validation import validate_limit

admin = Blueprint("admin", __name__, url_prefix="/admin")

MAX_CHANGES = 500


@admin.before_request
def require_token() -> None:
    settings = current_app.extensions["paxmart.settings"]
    require_bearer(settings.admin_token, "admin", "PAXMART_ADMIN_TOKEN")


@admin.get("/audit")
def audit() -> Response:
    return relay(operations.audit())


@admin.get("/transactions")
def transactions() -> Response:
    return relay(operations.transactions(request.args.to_dict()))


@admin.get("/transactions/<gtid>")
def transaction(gtid: str) -> Response:
    return relay(operations.transaction(gtid))


@admin.get("/dead-letters")
def dead_letters() -> Response:
    """Every consumer's dead letters, gathered by the coordinator."""
    return relay(operations.dead_letters(request.args.to_dict()))


@admin.post("/dead-letters/replay")
def replay_dead_letters() -> Response:
    return relay(operations.replay_dead_letters(optional_json_body()))


@admin.get("/switches")
def switches() -> Response:
    return jsonify(operations.control_state())


@admin.put("/switches/<name>")
def set_switch(name: str) -> Response:
    operations.known_switch(name)
    on = json_body().get("on")
    if not isinstance(on, bool):
        raise InvalidInput("on", "on must be true or false")
    operations.set_switch(name, on, actor())
    return switches()


@admin.delete("/switches/<name>")
def clear_switch(name: str) -> Response:
    """Drop the manual setting: the switch follows the level and the breakers again."""
    operations.clear_switch(name, actor())
    return switches()


@admin.put("/level")
def set_level() -> Response:
    operations.set_level(json_body().get("level"), actor())
    return switches()


@admin.get("/ratelimits")
def ratelimits() -> Response:
    return jsonify(
        {
            "items": [r.as_json() for r in operations.rules()],
            "failure_mode": current_gateway().limiter.failure_mode,
        }
    )


@admin.put("/ratelimits/<rule>")
def put_ratelimit(rule: str) -> Any:
    parsed = operations.parse_rule(rule, json_body())
    created = operations.put_rule(parsed, actor())
    return jsonify(parsed.as_json()), 201 if created else 200


@admin.delete("/ratelimits/<rule>")
def delete_ratelimit(rule: str) -> Any:
    operations.delete_rule(rule, actor())
    return "", 204


@admin.get("/changes")
def changes() -> Response:
    """The control plane's change log, newest first."""
    limit = validate_limit(request.args.get("limit"), 50, MAX_CHANGES)
    return jsonify({"items": operations.changes(limit)})


def actor() -> Actor:
    return operations.actor_named(request.headers.get("X-Actor", "admin"), request.remote_addr)
