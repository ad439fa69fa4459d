"""The one HTTP client between components: pooled keep-alive, a timeout on every call,
bounded retries only where the call is idempotent."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)
from urllib3.exceptions import MaxRetryError, NewConnectionError

from paxkit.errors import UpstreamNotReached, UpstreamTimeout, UpstreamUnavailable
from paxkit.tracing import outgoing_headers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any
    headers: dict[str, str]

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class _Retryable(Exception):
    """A transport failure worth another attempt."""

    def __init__(self, message: str, reached: bool) -> None:
        super().__init__(message)
        self.reached = reached


class ServiceClient:
    """Calls one upstream component; thread-safe, one connection pool per client."""

    def __init__(
        self, name: str, base_url: str, timeout_s: float, retries: int = 3, pool_size: int = 64
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.retries = retries
        self.session = requests.Session()
        self.session.trust_env = False  # internal loopback calls: no proxy or netrc lookups
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def get(
        self,
        path: str,
        params: dict[str, Any] | None = None,
        timeout_s: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """GET is idempotent: connection failures are retried a bounded number of times."""
        return self.call(
            "GET", path, params=params, timeout_s=timeout_s, idempotent=True, headers=headers
        )

    def post(
        self,
        path: str,
        json: Any = None,
        timeout_s: float | None = None,
        idempotent: bool = False,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """POST; pass idempotent=True only when the receiver dedupes (barrier, xa log, keys)."""
        return self.call(
            "POST", path, json=json, timeout_s=timeout_s, idempotent=idempotent, headers=headers
        )

    def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        timeout_s: float | None = None,
        idempotent: bool = False,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        timeout = timeout_s if timeout_s is not None else self.timeout_s
        attempts = self.retries if idempotent else 1
        retrying = Retrying(
            stop=stop_after_attempt(attempts),
            wait=wait_exponential_jitter(multiplier=0.05, max=0.5, jitter=0.05),
            retry=retry_if_exception_type(_Retryable),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    return self._once(method, path, json, params, timeout, headers)
        except _Retryable as err:
            error = UpstreamUnavailable if err.reached else UpstreamNotReached
            raise error(f"{self.name} is unavailable: {err}", upstream=self.name) from err
        raise AssertionError("unreachable")

    def _once(
        self,
        method: str,
        path: str,
        json: Any,
        params: dict[str, Any] | None,
        timeout: float,
        headers: dict[str, str] | None,
    ) -> Reply:
        url = f"{self.base_url}{path}"
        try:
            response = self.session.request(
                method,
                url,
                json=json,
                params=params,
                timeout=(min(timeout, 2.0), timeout),
                headers={**outgoing_headers(), **(headers or {})},
            )
        except requests.ConnectTimeout as err:
            raise _Retryable(str(err), reached=False) from err
        except requests.ReadTimeout as err:
            raise UpstreamTimeout(
                f"{self.name} did not answer within {timeout:.1f}s", upstream=self.name
            ) from err
        except requests.ConnectionError as err:
            raise _Retryable(str(err), reached=not _refused(err)) from err
        return Reply(response.status_code, _decode(response), dict(response.headers))

    def close(self) -> None:
        self.session.close()


def _refused(err: requests.ConnectionError) -> bool:
    """True when the connection was never established, so the request was never sent."""
    cause = err.args[0] if err.args else None
    return isinstance(cause, MaxRetryError) and isinstance(cause.reason, NewConnectionError)


def _decode(response: requests.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return {"raw": response.text[:500]}
