"""Credentials: the stack's service credential on internal routes, and bearer tokens.

Every route of an internal component (the coordinator, the services) except `/healthz`
and `/metrics` is reachable only by the other components of the same stack: each call
carries the stack's service credential in `X-Service-Token` (paxkit/http.py sends it). The
gateway is the only public entry and reaches the services with that credential too. A
process started without a credential refuses what it guards, with a message that says
so, rather than making one up.
"""

from __future__ import annotations

import hmac

from flask import Flask, request

from paxkit.errors import ApiError, Unauthorized

SERVICE_HEADER = "X-Service-Token"
OPEN_ENDPOINTS = frozenset({"healthz", "metrics"})


class CredentialNotConfigured(ApiError):
    """This process was started without the credential a route needs: it refuses the call."""

    status = 503
    code = "credential_not_configured"


def matches(supplied: str | None, expected: str) -> bool:
    """Constant-time comparison, so response timing tells nothing about the expected value."""
    return hmac.compare_digest((supplied or "").encode(), expected.encode())


def require_bearer(expected: str | None, what: str, setting: str) -> None:
    """Refuse the current request unless it carries `Authorization: Bearer <expected>`."""
    if expected is None:
        raise CredentialNotConfigured(
            f"This process was started without {setting}: {what} calls are refused."
        )
    if not matches(request.headers.get("Authorization"), f"Bearer {expected}"):
        raise Unauthorized(f"A valid 'Authorization: Bearer <{what} token>' header is required.")


def require_service_credential(app: Flask, token: str | None) -> None:
    """Every route of `app` but health and metrics answers 401 without the service credential."""

    @app.before_request
    def _check() -> None:
        if request.endpoint in OPEN_ENDPOINTS:
            return
        if token is None:
            raise CredentialNotConfigured(
                "This process was started without PAXMART_SERVICE_TOKEN: internal calls "
                "are refused."
            )
        if not matches(request.headers.get(SERVICE_HEADER), token):
            raise Unauthorized(
                f"Internal route: a valid '{SERVICE_HEADER}' header (the stack's service "
                "credential) is required."
            )


def service_headers(token: str | None) -> dict[str, str]:
    """What an internal call sends to prove it comes from inside the stack."""
    return {SERVICE_HEADER: token} if token else {}
