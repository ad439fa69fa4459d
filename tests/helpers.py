"""Small helpers shared by the integration and end-to-end tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from infra.samples import pending_order

__all__ = ["pending_order", "wait_until"]

T = TypeVar("T")


def wait_until(
    probe: Callable[[], T | None],
    timeout_s: float = 20.0,
    interval_s: float = 0.1,
    what: str = "condition",
) -> T:
    """Poll `probe` until it returns something truthy; fail with `what` after the deadline."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; last value: {last!r}")
