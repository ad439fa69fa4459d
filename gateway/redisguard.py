"""Redis for the request path: short timeouts, no retries, and fail-fast while it is down.

Every Redis call on a request path goes through `RedisGuard.run`. A call is bounded by
the socket timeout (PAXMART_GATEWAY_REDIS_TIMEOUT_S, 0.5 s by default: on a busy machine a
healthy Redis can take over 100 ms to answer), so a hung Redis (SIGSTOPped, overloaded)
costs at most that. After a connection error or timeout the
guard remembers Redis as down for `retry_after_s` and answers `RedisUnavailable` at once
without touching the network; then a single caller probes, and the rest keep failing
fast until the probe succeeds. Callers decide what "down" means for them (local rate
limit bucket, uncached read).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

log = logging.getLogger(__name__)

T = TypeVar("T")
# Errors that say "Redis is not answering", as opposed to a bug in the command.
UNREACHABLE = (redis.ConnectionError, redis.TimeoutError)


class RedisUnavailable(Exception):
    """Redis did not answer in time, or is known to be down right now."""


def fast_client(url: str, timeout_s: float) -> redis.Redis:
    """A client whose every call (connect included) gives up after `timeout_s`, never retried."""
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )


class RedisGuard:
    """Runs Redis calls, and short-circuits them for a while after Redis failed."""

    def __init__(
        self,
        client: redis.Redis,
        retry_after_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.retry_after_s = retry_after_s
        self._clock = clock
        self._down_until = 0.0
        self._probe = threading.Lock()

    @property
    def available(self) -> bool:
        """False while Redis is remembered as down."""
        return self._down_until == 0.0 or self._clock() >= self._down_until

    def run(self, call: Callable[[redis.Redis], T]) -> T:
        """`call(client)`, or RedisUnavailable when Redis is down or does not answer in time."""
        if self._down_until == 0.0:
            return self._attempt(call)
        if self._clock() < self._down_until or not self._probe.acquire(blocking=False):
            raise RedisUnavailable("Redis is unavailable (failing fast)")
        try:
            return self._attempt(call)
        finally:
            self._probe.release()

    def _attempt(self, call: Callable[[redis.Redis], T]) -> T:
        try:
            result = call(self.client)
        except UNREACHABLE as err:
            if self._down_until == 0.0:
                log.warning(
                    "Redis unreachable (%s); failing fast for %.1fs", err, self.retry_after_s
                )
            self._down_until = self._clock() + self.retry_after_s
            raise RedisUnavailable(str(err)) from err
        if self._down_until != 0.0:
            log.warning("Redis answers again")
            self._down_until = 0.0
        return result

    def close(self) -> None:
        self.client.close()
