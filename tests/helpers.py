"""Small helpers shared by the integration and end-to-end tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_until(
    probe: Callable[[], T],
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


def pending_order(order_id: str, mode: str) -> dict[str, Any]:
    """A pending order of one item, as the order service stores it before its outcome."""
    return {
        "order_id": order_id,
        "gtid": f"gtx-{order_id}",
        "user_id": 4,
        "mode": mode,
        "txn_mode": mode,
        "status": "pending",
        "reason": None,
        "items": [{"sku": "SKU-0007", "qty": 1, "price_cents": 700}],
        "coupon_id": None,
        "total_cents": 700,
        "discount_cents": 0,
        "red_packet_cents": 0,
        "payable_cents": 700,
        "notify_url": None,
    }
