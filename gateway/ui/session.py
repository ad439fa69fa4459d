"""The dashboard's session: a signed cookie naming who logged in, with their CSRF token.

The cookie is signed with a key derived from the admin token, so every gateway process and
instance accepts it without shared state, and a new admin token ends every session. It is
HttpOnly, SameSite=Strict and scoped to /admin/ui, and lasts `SESSION_MAX_AGE_S`; logging
out drops it from the browser. Every state-changing request must carry the session's CSRF
token (form field `csrf_token` or header `X-CSRF-Token`); the login form carries a nonce
of its own cookie, so even logging in cannot be forged from another site.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer

from paxkit.auth import matches

COOKIE = "paxmart_ui"
LOGIN_COOKIE = "paxmart_ui_login"
PATH = "/admin/ui"
SESSION_MAX_AGE_S = 8 * 3600
LOGIN_MAX_AGE_S = 15 * 60
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"


@dataclass(frozen=True)
class UiSession:
    """Who is logged in (the actor of their changes) and the token their forms carry."""

    actor: str
    csrf: str

    def accepts(self, supplied: str | None) -> bool:
        return supplied is not None and matches(supplied, self.csrf)


class Sessions:
    """Issues and reads session cookies; refuses everything without an admin token."""

    def __init__(self, admin_token: str | None) -> None:
        self.admin_token = admin_token
        key = _signing_key(admin_token) if admin_token else None
        self._session = URLSafeTimedSerializer(key, salt="paxmart-ui-session") if key else None
        self._login = URLSafeTimedSerializer(key, salt="paxmart-ui-login") if key else None

    @property
    def configured(self) -> bool:
        return self.admin_token is not None

    def token_matches(self, supplied: str) -> bool:
        return self.admin_token is not None and matches(supplied, self.admin_token)

    def issue(self, actor: str) -> tuple[UiSession, str]:
        """A new session and its cookie value."""
        session = UiSession(actor, secrets.token_urlsafe(32))
        return session, self._signer().dumps({"actor": session.actor, "csrf": session.csrf})

    def read(self, cookie: str | None) -> UiSession | None:
        """The session a cookie holds; None when it is missing, forged or expired."""
        data = self._loads(self._session, cookie, SESSION_MAX_AGE_S)
        if not isinstance(data, dict):
            return None
        actor, csrf = data.get("actor"), data.get("csrf")
        if not isinstance(actor, str) or not isinstance(csrf, str):
            return None
        return UiSession(actor, csrf)

    def login_nonce(self) -> tuple[str, str]:
        """A nonce for the login form and the cookie that vouches for it."""
        nonce = secrets.token_urlsafe(24)
        return nonce, self._signer(self._login).dumps(nonce)

    def login_nonce_matches(self, cookie: str | None, supplied: str | None) -> bool:
        nonce = self._loads(self._login, cookie, LOGIN_MAX_AGE_S)
        return isinstance(nonce, str) and supplied is not None and matches(supplied, nonce)

    def _signer(self, which: URLSafeTimedSerializer | None = None) -> URLSafeTimedSerializer:
        signer = which or self._session
        if signer is None:
            raise RuntimeError("no admin token: the dashboard issues no session")
        return signer

    @staticmethod
    def _loads(signer: URLSafeTimedSerializer | None, cookie: str | None, max_age: int) -> object:
        if signer is None or not cookie:
            return None
        try:
            return signer.loads(cookie, max_age=max_age)
        except BadSignature:  # also an expired one (SignatureExpired)
            return None


def _signing_key(admin_token: str) -> bytes:
    """A key of its own for the cookies, so a cookie reveals nothing about the admin token."""
    return hmac.new(admin_token.encode(), b"paxmart dashboard sessions", hashlib.sha256).digest()
