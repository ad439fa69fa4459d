"""The gateway's clients for every component behind it, each behind its circuit breaker."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from gateway.breaker import CircuitBreaker, CircuitOpen
from paxkit.config import Settings
from paxkit.http import Reply, ServiceClient, component_client

UPSTREAMS = ("order", "inventory", "coupon", "redpacket", "coordinator")


class Upstream:
    """Calls one upstream unless its breaker is open; every outcome feeds the breaker.

    `force=True` skips the breaker's gate (a manual switch setting wins over the
    automatic state) but still records the outcome.
    """

    def __init__(self, client: ServiceClient, breaker: CircuitBreaker) -> None:
        self.client = client
        self.breaker = breaker

    @property
    def name(self) -> str:
        return self.client.name

    def get(
        self,
        path: str,
        params: dict[str, Any] | None = None,
        timeout_s: float | None = None,
        force: bool = False,
    ) -> Reply:
        return self._guarded(lambda: self.client.get(path, params, timeout_s), force)

    def post(
        self,
        path: str,
        json: Any = None,
        timeout_s: float | None = None,
        headers: dict[str, str] | None = None,
        force: bool = False,
    ) -> Reply:
        return self._guarded(
            lambda: self.client.post(path, json=json, timeout_s=timeout_s, headers=headers), force
        )

    def _guarded(self, call: Callable[[], Reply], force: bool) -> Reply:
        if not force and not self.breaker.allow():
            raise CircuitOpen(self.name, self.breaker.retry_after_s())
        started = time.perf_counter()
        try:
            reply = call()
        except Exception:
            self.breaker.record(False, time.perf_counter() - started)
            raise
        self.breaker.record(reply.status < 500, time.perf_counter() - started)
        return reply

    def close(self) -> None:
        self.client.close()


def make_clients(settings: Settings) -> dict[str, ServiceClient]:
    return {name: component_client(settings, name, settings.http_timeout_s) for name in UPSTREAMS}


def segment(value: str) -> str:
    """A client-supplied path segment, escaped so it can't change the upstream path."""
    return quote(value, safe="")
