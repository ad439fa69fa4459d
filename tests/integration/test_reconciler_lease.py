"""The pending-order reconciler as a singleton job: one replica at a time runs it, and a
replica paused past its lease has its writes refused by the fence (services/order).

Each reconciler runs over a scratch copy of the order database; its coordinator is a
stand-in that answers 404 (no begin logged) for a msg order, so a run sends the order's
events again through the outbox and puts the order back in line for `RESEND_S`. A pause
is a check-back the stand-in holds until the test lets it go; the lease's lapse is
observed on the database's clock.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

import pytest

from paxkit.db import Database, run
from paxkit.http import Reply
from paxkit.lease import Leases
from services.order.reconcile import RECONCILER, PendingOrderReconciler
from services.order.repository import OrderRepository
from tests.helpers import pending_order, wait_until

RESEND_S = 60.0
SHORT_TTL_S = 0.2
_ids = itertools.count(1)


class HeldCoordinator:
    """Answers every check-back 404, after `gate` opens; counts the calls per gtid."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.gate = gate
        self.entered = threading.Event()
        self.calls: list[str] = []

    def post(self, path: str, json: Any = None, idempotent: bool = False) -> Reply:
        self.calls.append(path.split("/")[2])
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(30), "the test never let the check-back go"
        return Reply(404, {"error": {"code": "transaction_not_found"}}, {})


@pytest.fixture(scope="module")
def db(scratch_db: Callable[[str], Database]) -> Database:
    return scratch_db("order")


@pytest.fixture(autouse=True)
def no_orders(db: Database) -> None:
    with db.transaction() as conn:
        run(conn, "TRUNCATE outbox, notification_attempts, notifications, orders")


def stale_msg_order(db: Database) -> str:
    """A pending msg order an hour old that the coordinator never heard of; its gtid."""
    order = pending_order(f"it-lease-{next(_ids)}", "msg")
    assert OrderRepository(db).insert(order) is not None
    with db.transaction() as conn:
        run(
            conn,
            "UPDATE orders SET created_at = now() - interval '1 hour' WHERE order_id = :id",
            {"id": order["order_id"]},
        )
    return str(order["gtid"])


def reconciler(
    db: Database, coordinator: HeldCoordinator, owner: str, ttl_s: float = 30.0, fencing=True
) -> PendingOrderReconciler:
    return PendingOrderReconciler(
        OrderRepository(db),
        coordinator,  # type: ignore[arg-type]
        horizon_s=0.0,
        resend_s=RESEND_S,
        leases=Leases(db, owner),
        lease_ttl_s=ttl_s,
        fencing=fencing,
    )


def events_sent(db: Database, gtid: str) -> int:
    row = db.fetch_one("SELECT count(*) AS n FROM outbox WHERE payload->>'gtid' = :g", g=gtid)
    return int(row["n"]) if row else -1


def next_check(db: Database, gtid: str) -> Any:
    row = db.fetch_one("SELECT next_check_at FROM orders WHERE gtid = :g", g=gtid)
    assert row is not None and row["next_check_at"] is not None
    return row["next_check_at"]


def in_thread(work: Callable[[], int]) -> tuple[threading.Thread, list[int]]:
    results: list[int] = []
    thread = threading.Thread(target=lambda: results.append(work()), daemon=True)
    thread.start()
    return thread, results


@pytest.mark.parametrize("fencing", [True, False], ids=["fencing", "no-fencing"])
def test_a_replica_paused_past_its_lease_is_refused_only_with_fencing(db, fencing):
    gate = threading.Event()
    gtid = stale_msg_order(db)
    held = HeldCoordinator(gate)
    thread, _ = in_thread(reconciler(db, held, "replica-a", SHORT_TTL_S, fencing).run_once)
    assert held.entered.wait(10), "replica A never checked the order back"
    observer = Leases(db, "observer")
    wait_until(lambda: observer.held(RECONCILER) is None, 10, 0.05, what="A's lease to lapse")

    reconciler(db, HeldCoordinator(), "replica-b", fencing=fencing).run_once()
    sent_by_b, scheduled_by_b = events_sent(db, gtid), next_check(db, gtid)
    gate.set()  # replica A wakes and writes what it decided before the pause
    thread.join(10)

    assert not thread.is_alive() and sent_by_b > 0
    if fencing:
        assert events_sent(db, gtid) == sent_by_b, "A's resend was refused"
        assert next_check(db, gtid) == scheduled_by_b, "B's schedule stands"
    else:
        assert events_sent(db, gtid) == 2 * sent_by_b, "the events went out twice"
        assert next_check(db, gtid) > scheduled_by_b, "B's schedule was overwritten: lost"


def test_two_replicas_racing_run_the_job_once(db):
    gtids = [stale_msg_order(db) for _ in range(3)]
    gate = threading.Event()
    coordinators = [HeldCoordinator(gate), HeldCoordinator(gate)]
    start = threading.Barrier(2)

    def replica(i: int) -> Callable[[], int]:
        job = reconciler(db, coordinators[i], f"replica-{i}")

        def run_together() -> int:
            start.wait(10)
            return job.run_once()

        return run_together

    threads = [in_thread(replica(i))[0] for i in range(2)]
    wait_until(lambda: any(not t.is_alive() for t in threads), 10, 0.02, what="one to skip")
    gate.set()
    for thread in threads:
        thread.join(10)

    calls = sorted(c for coordinator in coordinators for c in coordinator.calls)
    assert calls == sorted(gtids), "each order checked back once, by one replica"
    assert [c.calls == [] for c in coordinators].count(True) == 1, "the other one skipped"
    assert [events_sent(db, g) for g in gtids] == [events_sent(db, gtids[0])] * 3
    assert events_sent(db, gtids[0]) > 0
