"""Small helpers shared by the integration and end-to-end tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from gateway.identity import make_signer
from infra.samples import pending_order
from tests.conftest import TEST_ENV

__all__ = ["as_user", "pending_order", "user_token", "wait_until"]

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


def user_token(user_id: int, ttl_s: float = 900.0) -> str:
    """A token of `user_id` signed with the suite's key, as the gateway's login issues it
    (for a gateway in front of stand-ins that cannot log anyone in)."""
    signer = make_signer(TEST_ENV["PAXMART_AUTH_SIGNING_KEY"], ttl_s)
    assert signer is not None
    return signer.issue(str(user_id)).token


def as_user(user_id: int) -> dict[str, str]:
    """The header that makes a request act as `user_id`."""
    return {"Authorization": f"Bearer {user_token(user_id)}"}
