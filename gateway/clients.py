"""Telling clients apart: by `X-Api-Key`, else by the peer address (proxies are not trusted)."""

from __future__ import annotations

import hashlib

from flask import g, request

MAX_PLAIN = 64


def client_id() -> str:
    """The caller's id, bounded in length so it can be part of a Redis key."""
    known: str | None = g.get("client_id")
    if known is None:
        known = g.client_id = _identify()
    return known


def _identify() -> str:
    api_key = request.headers.get("X-Api-Key")
    if not api_key:
        return f"addr:{request.remote_addr or 'unknown'}"
    if len(api_key) <= MAX_PLAIN:
        return f"key:{api_key}"
    return "key#" + hashlib.sha256(api_key.encode()).hexdigest()
