"""Acting as the seeded users: their development passwords, and a book of their tokens.

Every seeded user N logs in with the password `paxmart-N` (docs/api.md). The load
generators, benchmarks, chaos and scenarios log their users in through the gateway
(`POST /api/auth/token`) and keep each token until shortly before it expires; a login
answered 429 (the login's brute-force limit) waits its `Retry-After`, within a deadline.
"""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import requests

LOGIN_PATH = "/api/auth/token"
# A token is renewed this long before it expires, so no request carries an expired one.
RENEW_MARGIN_S = 30.0
MAX_RETRY_AFTER_S = 5.0


def dev_password(user_id: int) -> str:
    """The seeded development password of user `user_id`."""
    return f"paxmart-{user_id}"


class LoginFailed(RuntimeError):
    """The gateway would not issue a token (its status and body are in the message)."""


@dataclass(frozen=True)
class Token:
    value: str
    expires_at: float  # on this process's monotonic clock

    def fresh(self, now: float) -> bool:
        return now < self.expires_at - RENEW_MARGIN_S


def login(
    http: requests.Session,
    base_url: str,
    user_id: int,
    password: str | None = None,
    deadline_s: float = 60.0,
    timeout_s: float = 10.0,
) -> Token:
    """Log `user_id` in; waits out a 429 until `deadline_s`; LoginFailed otherwise."""
    body = {"user_id": user_id, "password": password or dev_password(user_id)}
    give_up = time.monotonic() + deadline_s
    while True:
        started = time.monotonic()
        response = http.post(base_url + LOGIN_PATH, json=body, timeout=timeout_s)
        if response.status_code == 200:
            answer = response.json()
            return Token(answer["access_token"], started + float(answer["expires_in"]))
        retry_s = retry_after_s(response)
        if retry_s is None or time.monotonic() + retry_s > give_up:
            raise LoginFailed(f"login of user {user_id}: {response.status_code} {response.text}")
        time.sleep(retry_s)  # the server said when a token is available again


def retry_after_s(response: requests.Response) -> float | None:
    """How long a refused login (429 or 503) was told to wait, bounded; None for others."""
    if response.status_code not in (429, 503):
        return None
    try:
        return min(MAX_RETRY_AFTER_S, max(0.05, float(response.headers.get("Retry-After", "1"))))
    except ValueError:
        return 1.0


class TokenBook:
    """Each user's current token, logged in on first use and again before it expires."""

    def __init__(self, base_url: str, http: requests.Session | None = None) -> None:
        self.base_url = base_url
        self.http = http or requests.Session()
        self._tokens: dict[int, Token] = {}
        self._lock = threading.Lock()

    def token(self, user_id: int) -> str:
        with self._lock:
            known = self._tokens.get(user_id)
        if known is not None and known.fresh(time.monotonic()):
            return known.value
        fresh = login(self.http, self.base_url, user_id)
        with self._lock:
            self._tokens[user_id] = fresh
        return fresh.value

    def headers(self, user_id: int) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user_id)}"}

    def forget(self, user_id: int) -> None:
        with self._lock:
            self._tokens.pop(user_id, None)


USER_PATH = re.compile(r"^/api/users/([0-9]{1,10})/")
ORDER_PATH = re.compile(r"^/api/orders/([A-Za-z0-9_-]{1,64})")
USER_SCOPED = ("/api/users/", "/api/orders", "/api/auth/refresh")


class SignedIn:
    """A client's automatic sign-in: a user-scoped request carries the token of the user
    it names (its path's, its order body's, or the owner of the order it reads, noted
    when the order was placed); a request that brings its own Authorization is left as is."""

    def __init__(self, book: TokenBook) -> None:
        self.book = book
        self._owners: dict[str, int] = {}
        self._lock = threading.Lock()

    def user_of(self, path: str, body: object) -> int | None:
        in_path = USER_PATH.match(path)
        if in_path:
            return int(in_path.group(1))
        user = body.get("user_id") if isinstance(body, dict) else None
        if isinstance(user, int) and not isinstance(user, bool):
            return user
        order = ORDER_PATH.match(path)
        if order:
            with self._lock:
                return self._owners.get(order.group(1))
        return None

    def sign(self, path: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        headers = dict(kwargs.get("headers") or {})
        if not path.startswith(USER_SCOPED) or "Authorization" in headers:
            return kwargs
        user = self.user_of(path, kwargs.get("json"))
        if user is None:
            return kwargs
        return {**kwargs, "headers": {**headers, **self.book.headers(user)}}

    def note(self, response: requests.Response, body: object) -> None:
        """Remember whose order an answer to a placement names."""
        user = body.get("user_id") if isinstance(body, dict) else None
        try:
            answer = response.json()
        except ValueError:
            return
        order_id = answer.get("order_id") if isinstance(answer, dict) else None
        if isinstance(user, int) and isinstance(order_id, str):
            with self._lock:
                self._owners[order_id] = user
        error = answer.get("error") if isinstance(answer, dict) else None
        if isinstance(user, int) and isinstance(error, dict) and "order_id" in error:
            with self._lock:
                self._owners[str(error["order_id"])] = user

    def own(self, order_id: str, user_id: int) -> None:
        with self._lock:
            self._owners[order_id] = user_id


def log_in_all(book: TokenBook, users: range | list[int], workers: int = 8) -> None:
    """Log every one of `users` in up front (a run that must not log in mid-fault)."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="login") as pool:
        list(pool.map(book.token, users))


def widen_login_limit(
    base_url: str, admin_token: str, rate_per_s: float = 10000, timeout_s: float = 10.0
) -> None:
    """A tool's own stack logs its many users in at once: the per-address `login` rule is
    widened for it (as an operator would, through the admin API)."""
    rule = {
        "route": LOGIN_PATH,
        "rate_per_s": rate_per_s,
        "burst": int(rate_per_s),
        "scope": "client",
    }
    response = requests.put(
        f"{base_url}/admin/ratelimits/login",
        json=rule,
        headers={"Authorization": f"Bearer {admin_token}", "X-Actor": "tool-login"},
        timeout=timeout_s,
    )
    response.raise_for_status()
