"""The reconciler's use of its lease without servers: no lease, no run; a lease lost
halfway stops the run; the lease is given back; and the resend schedule."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from paxkit.lease import Lease, LeaseLost, Leases
from services.order.reconcile import (
    RECONCILER,
    PendingOrderReconciler,
    wait_before_resend,
)

pytestmark = pytest.mark.unit

LEASE = Lease(RECONCILER, "me", 7, datetime(2030, 1, 1, tzinfo=UTC))


class FakeLeases:
    """Grants `LEASE` when `free`; a renewal fails once `lost`."""

    def __init__(self, free: bool = True, lost: bool = False) -> None:
        self.free = free
        self.lost = lost
        self.released: list[Lease] = []

    def acquire(self, name: str, ttl_s: float) -> Lease | None:
        assert name == RECONCILER
        return LEASE if self.free else None

    def renew(self, lease: Lease, ttl_s: float) -> Lease:
        if self.lost:
            raise LeaseLost("lapsed")
        return lease

    def release(self, lease: Lease) -> bool:
        self.released.append(lease)
        return True


class Untouchable:
    """An order repository or coordinator the run must not use."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"used {name} without the lease")


class DueOrders:
    def stale_pending(self, older_than_s: float, limit: int) -> list[dict[str, Any]]:
        return [{"order_id": "o-1", "gtid": "g-1", "txn_mode": "msg", "age_s": 9e9}]


def job(leases: FakeLeases, orders: Any, coordinator: Any) -> PendingOrderReconciler:
    """A reconciler without the fence, whose writes need a database."""
    return PendingOrderReconciler(orders, coordinator, 0.0, 60.0, leases, fencing=False)  # type: ignore[arg-type]


def test_a_replica_without_the_lease_skips_the_run_untouched():
    leases = FakeLeases(free=False)
    assert job(leases, Untouchable(), Untouchable()).run_once() == 0
    assert leases.released == []


def test_a_lease_lost_before_an_order_stops_the_run_and_is_given_back():
    leases = FakeLeases(lost=True)

    assert job(leases, DueOrders(), Untouchable()).run_once() == 0, (
        "no check-back after the renewal failed"
    )
    assert leases.released == [LEASE]


@pytest.mark.parametrize(
    ("age_s", "wait_s"), [(0.0, 60.0), (45.5, 14.5), (60.0, 0.0), (3600.0, 0.0)]
)
def test_events_go_again_once_the_order_is_as_old_as_the_resend_period(age_s, wait_s):
    assert wait_before_resend(age_s, 60.0) == wait_s


@pytest.mark.parametrize("ttl_s", [0.0, -1.0, float("nan")])
def test_a_lease_needs_a_positive_time_to_live_before_any_statement(ttl_s):
    leases = Leases(Untouchable(), "me")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        leases.acquire("job", ttl_s)
