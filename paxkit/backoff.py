"""Capped exponential backoff for loops that reconnect after a failure (consumers, relays)."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Delays that double with each consecutive failure up to `cap_s`, with jitter (half to
    all of the step); a success starts over from `base_s`."""

    def __init__(
        self, base_s: float, cap_s: float, jitter: Callable[[], float] = random.random
    ) -> None:
        self.base_s = base_s
        self.cap_s = cap_s
        self.jitter = jitter
        self.failures = 0

    def failed(self) -> float:
        """Count a failure; the delay to wait before the next try."""
        step = min(self.cap_s, self.base_s * 2 ** min(self.failures, 30))
        self.failures += 1
        return step * (0.5 + self.jitter() / 2)

    def succeeded(self) -> None:
        self.failures = 0


RECONNECT_BASE_S = 0.25
RECONNECT_CAP_S = 10.0


def reconnect_backoff() -> Backoff:
    """The backoff of a loop that reconnects to its servers (a consumer, a relay)."""
    return Backoff(RECONNECT_BASE_S, RECONNECT_CAP_S)
