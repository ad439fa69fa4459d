"""Who the caller is: end users' signed bearer tokens, checked once at the edge.

`POST /api/auth/token` turns a user's credentials (checked by the order service, which keeps
the salted hashes) into a short-lived token signed with `PAXMART_AUTH_SIGNING_KEY`;
`POST /api/auth/refresh` trades a still valid token for a fresh one. Every user-scoped
route (`/api/users/<id>/*`, `/api/orders*`) needs `Authorization: Bearer <token>`: none
is 401 `auth_required`, a bad one 401 `token_invalid`, an expired one 401 `token_expired`,
and another user's resource 403 `forbidden`. The routes themselves check what only they
can see (an order body's `user_id`, the owner of an order read).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import g, request

from paxkit.auth import CredentialNotConfigured
from paxkit.errors import ApiError, AuthRequired, Forbidden, TokenInvalid
from paxkit.tokens import Issued, TokenSigner, bearer_token
from paxkit.validation import ASCII_DIGITS, MAX_INT, parse_int_arg

ISSUER = "paxmart-gateway"
AUDIENCE = "paxmart-api"
# Route templates that act as one user: everything under these prefixes.
USER_SCOPED_PREFIXES = ("/api/users/", "/api/orders")
REFRESH_TEMPLATE = "/api/auth/refresh"
# The header the order service gets the authenticated user in (only ever believed on a
# call that carries the stack's service credential).
USER_HEADER = "X-Authenticated-User"


@dataclass(frozen=True)
class Caller:
    """The authenticated end user of this request."""

    user_id: int
    expires_at: float


def make_signer(key: str | None, ttl_s: float) -> TokenSigner | None:
    return TokenSigner(key, ttl_s, issuer=ISSUER, audience=AUDIENCE) if key else None


def user_scoped(template: str | None) -> bool:
    return template is not None and (
        template.startswith(USER_SCOPED_PREFIXES) or template == REFRESH_TEMPLATE
    )


def require_signer(signer: TokenSigner | None) -> TokenSigner:
    if signer is None:
        raise CredentialNotConfigured(
            "This gateway was started without PAXMART_AUTH_SIGNING_KEY: user calls are refused."
        )
    return signer


def authenticate(signer: TokenSigner | None) -> Caller:
    """The request's caller from its bearer token, or the 401 that says what is wrong."""
    verifier = require_signer(signer)
    token = bearer_token(request.headers.get("Authorization"))
    if token is None:
        raise AuthRequired(
            "This route needs 'Authorization: Bearer <token>' (from POST /api/auth/token)."
        )
    subject, expires_at = verifier.verify(token)
    if not ASCII_DIGITS.match(subject):
        raise TokenInvalid("The bearer token is not a user's token.")
    caller = Caller(int(subject), expires_at)
    g.caller = caller
    return caller


def optional_caller(signer: TokenSigner | None) -> Caller | None:
    """The caller of a public route that sent a valid token (else anonymous: no error)."""
    if signer is None or not request.headers.get("Authorization"):
        return None
    try:
        return authenticate(signer)
    except ApiError:  # a bad or expired token on a public read is just an anonymous read
        return None


def current_caller() -> Caller | None:
    caller: Caller | None = g.get("caller")
    return caller


def check_path_owner(caller: Caller, view_args: dict[str, Any] | None) -> None:
    """A `<user_id>` in the path must be the caller (a malformed one is the route's 400)."""
    raw = (view_args or {}).get("user_id")
    if raw is None:
        return
    if parse_int_arg(raw, "user_id", MAX_INT) != caller.user_id:
        raise forbidden()


def check_owner(caller: Caller, user_id: Any) -> None:
    """An order body's or an order's `user_id`, when it is an id, must be the caller's (one
    of the wrong type is left to the order service's 400, which also refuses any order
    not for the user the gateway forwards)."""
    if isinstance(user_id, int) and not isinstance(user_id, bool) and user_id != caller.user_id:
        raise forbidden()


def forbidden() -> Forbidden:
    return Forbidden("That belongs to another user: a token acts only as its own user.")


def token_body(issued: Issued) -> dict[str, Any]:
    return {
        "access_token": issued.token,
        "token_type": "Bearer",
        "expires_in": int(issued.ttl_s),
        "expires_at": int(issued.expires_at),
        "user_id": int(issued.subject),
    }
