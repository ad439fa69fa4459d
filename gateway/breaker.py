"""Circuit breakers: automatic degradation per upstream (one breaker per upstream, per process).

closed -> open: over the sliding window (the last `window_s` seconds, in one-second
buckets) at least `min_calls` calls were made and the failure ratio (transport errors,
5xx) reached `failure_ratio` or the slow-call ratio (calls taking `slow_call_s` or more)
reached `slow_ratio`.
open -> half_open: after `open_s`; no call reaches the upstream while open.
half_open -> closed: `probes` trial calls (at most that many at a time) all succeeded.
half_open -> open: any trial call failed or was slow.

The state is in memory in each gateway process: each process protects itself from what
it sees, and GET /admin/switches reports it as the "automatic" state.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway import metrics
from paxkit.errors import ApiError

log = logging.getLogger(__name__)

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
STATE_VALUE = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}


@dataclass(frozen=True)
class BreakerPolicy:
    window_s: int = 10
    min_calls: int = 20
    failure_ratio: float = 0.5
    slow_call_s: float = 2.0
    slow_ratio: float = 0.8
    open_s: float = 5.0
    probes: int = 3


class CircuitOpen(ApiError):
    """503: the upstream's breaker is open, so the call was not even tried."""

    status = 503
    code = "circuit_open"

    def __init__(self, upstream: str, retry_after_s: float) -> None:
        super().__init__(
            f"{upstream} is failing; calls to it are paused (circuit open).",
            headers={"Retry-After": str(max(1, math.ceil(retry_after_s)))},
            upstream=upstream,
        )


class _Window:
    """Call, failure and slow-call counts over the last `span` seconds, in 1 s buckets."""

    def __init__(self, span: int) -> None:
        self.span = span
        self.buckets = [[-1, 0, 0, 0] for _ in range(span)]  # [second, calls, failed, slow]

    def add(self, now: float, failed: bool, slow: bool) -> None:
        second = int(now)
        bucket = self.buckets[second % self.span]
        if bucket[0] != second:
            bucket[:] = [second, 0, 0, 0]
        bucket[1] += 1
        bucket[2] += failed
        bucket[3] += slow

    def totals(self, now: float) -> tuple[int, int, int]:
        oldest = int(now) - self.span
        live = [b for b in self.buckets if b[0] > oldest]
        return sum(b[1] for b in live), sum(b[2] for b in live), sum(b[3] for b in live)

    def clear(self) -> None:
        for bucket in self.buckets:
            bucket[:] = [-1, 0, 0, 0]


class CircuitBreaker:
    """One upstream's breaker; thread-safe."""

    def __init__(
        self, name: str, policy: BreakerPolicy, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.name = name
        self.policy = policy
        self._clock = clock
        self._lock = threading.Lock()
        self._window = _Window(policy.window_s)
        self._state = CLOSED
        self._opened_at = 0.0
        self._trials = 0  # trial calls let through in half-open
        self._passed = 0  # of which succeeded
        metrics.BREAKER_STATE.labels(name).set(STATE_VALUE[CLOSED])

    @property
    def state(self) -> str:
        with self._lock:
            return self._current(self._clock())

    def is_open(self) -> bool:
        """Open and not yet due for probing (the automatic degradation is on)."""
        return self.state == OPEN

    def retry_after_s(self) -> float:
        with self._lock:
            return max(0.0, self._opened_at + self.policy.open_s - self._clock())

    def allow(self) -> bool:
        """May a call go through now? In half-open this takes one of the trial slots."""
        with self._lock:
            state = self._current(self._clock())
            if state == CLOSED:
                return True
            if state == HALF_OPEN and self._trials < self.policy.probes:
                self._trials += 1
                return True
            return False

    def record(self, ok: bool, duration_s: float) -> None:
        """The outcome of a call that went through."""
        slow = duration_s >= self.policy.slow_call_s
        with self._lock:
            now = self._clock()
            state = self._current(now)
            if state == HALF_OPEN:
                self._trial_outcome(now, ok and not slow)
            elif state == CLOSED:
                self._window.add(now, not ok, slow)
                if self._tripped(now):
                    self._move(OPEN, now)

    def status(self) -> dict[str, Any]:
        with self._lock:
            now = self._clock()
            state = self._current(now)
            calls, failed, slow = self._window.totals(now)
            retry = max(0.0, self._opened_at + self.policy.open_s - now) if state == OPEN else 0.0
            return {
                "state": state,
                "calls": calls,
                "failure_ratio": round(failed / calls, 3) if calls else 0.0,
                "slow_ratio": round(slow / calls, 3) if calls else 0.0,
                "retry_after_s": round(retry, 3),
            }

    def _current(self, now: float) -> str:
        """The state, moving open -> half_open once the open time is over (lock held)."""
        if self._state == OPEN and now >= self._opened_at + self.policy.open_s:
            self._move(HALF_OPEN, now)
        return self._state

    def _tripped(self, now: float) -> bool:
        calls, failed, slow = self._window.totals(now)
        if calls < self.policy.min_calls:
            return False
        return failed / calls >= self.policy.failure_ratio or slow / calls >= self.policy.slow_ratio

    def _trial_outcome(self, now: float, good: bool) -> None:
        if not good:
            self._move(OPEN, now)
            return
        self._passed += 1
        if self._passed >= self.policy.probes:
            self._move(CLOSED, now)

    def _move(self, state: str, now: float) -> None:
        log.warning("circuit breaker %s: %s -> %s", self.name, self._state, state)
        self._state = state
        self._trials = self._passed = 0
        if state == OPEN:
            self._opened_at = now
        if state == CLOSED:
            self._window.clear()
        metrics.BREAKER_STATE.labels(self.name).set(STATE_VALUE[state])
        metrics.BREAKER_TRANSITIONS.labels(self.name, state).inc()
