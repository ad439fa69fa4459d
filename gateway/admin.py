"""Admin API behind a bearer token: audit and transactions (served by the coordinator)."""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, current_app, request

from gateway.routes import relay, upstream
from gateway.upstreams import segment
from paxkit.errors import Unauthorized

admin = Blueprint("admin", __name__, url_prefix="/admin")


@admin.before_request
def require_token() -> None:
    expected = current_app.extensions["paxmart.settings"].admin_token
    supplied = request.headers.get("Authorization", "")
    if not hmac.compare_digest(supplied.encode(), f"Bearer {expected}".encode()):
        raise Unauthorized("A valid 'Authorization: Bearer <admin token>' header is required.")


@admin.get("/audit")
def audit() -> Response:
    return relay(upstream("coordinator").get("/admin/audit", timeout_s=60.0))


@admin.get("/transactions")
def transactions() -> Response:
    return relay(upstream("coordinator").get("/admin/transactions", params=request.args.to_dict()))


@admin.get("/transactions/<gtid>")
def transaction(gtid: str) -> Response:
    return relay(upstream("coordinator").get(f"/admin/transactions/{segment(gtid)}"))
