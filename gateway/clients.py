"""Telling clients apart: the authenticated user, else an issued `X-Api-Key`, else the peer
address (proxies are not trusted).

An API key is issued, never made up: `issue_api_key` signs a name with a key derived from
the token signing key, and only a key whose signature checks out names a client. Any other
value counts for nothing (the address is used), so inventing keys escapes no limit.
"""

from __future__ import annotations

import hashlib
import hmac

from flask import g, request

from gateway.core import current_gateway
from gateway.identity import current_caller
from paxkit.auth import matches

API_KEY_PREFIX = "pk_"
KEY_NAME_MAX = 64
_KEY_CONTEXT = b"paxmart gateway api keys"


def client_id() -> str:
    """The caller's id, bounded in length so it can be part of a Redis key."""
    known: str | None = g.get("client_id")
    if known is None:
        known = g.client_id = _identify()
    return known


def _identify() -> str:
    caller = current_caller()
    if caller is not None:
        return f"user:{caller.user_id}"
    name = api_key_name(request.headers.get("X-Api-Key"), _signing_key())
    if name is not None:
        return f"key:{name}"
    return f"addr:{request.remote_addr or 'unknown'}"


def _signing_key() -> str | None:
    return current_gateway().settings.auth_signing_key


def issue_api_key(name: str, signing_key: str) -> str:
    """A client's API key: its name and the name's signature (`pk_<name>.<hex>`)."""
    if not name or len(name) > KEY_NAME_MAX or not name.isascii() or "." in name:
        raise ValueError("an API key's name is 1-64 ASCII characters without '.'")
    return f"{API_KEY_PREFIX}{name}.{_signature(name, signing_key)}"


def api_key_name(api_key: str | None, signing_key: str | None) -> str | None:
    """The name an issued key was issued for; None for no key or one that was not issued."""
    if not api_key or not signing_key or not api_key.startswith(API_KEY_PREFIX):
        return None
    name, sep, signature = api_key[len(API_KEY_PREFIX) :].rpartition(".")
    if not sep or not name or len(name) > KEY_NAME_MAX:
        return None
    if not matches(signature, _signature(name, signing_key)):
        return None
    return name


def _signature(name: str, signing_key: str) -> str:
    derived = hmac.new(signing_key.encode(), _KEY_CONTEXT, hashlib.sha256).digest()
    return hmac.new(derived, name.encode(), hashlib.sha256).hexdigest()[:32]
