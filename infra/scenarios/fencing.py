"""A lease is not a lock: `lock-pause-no-fencing` and `lock-pause-fencing`.

Two replicas of the order worker's reconciler job (paxkit/lease.py, services/order/
reconcile.py) take turns under the `order-reconciler` lease. Replica A takes it, checks a
stale msg order back with the coordinator and, just before writing what it decided, is
SIGSTOPped (a GC pause, a swapped-out VM) past its lease's time to live. Replica B takes the
lease, sends the order's events again and schedules the next check. Then A wakes and
writes what it decided before the pause: it does not know its lease is gone, because no
check it could make before writing is free of the same race (Kleppmann, "How to do
distributed locking", 2016). Without fencing, A's stale write lands: the events go out a
second time and B's schedule is overwritten. With fencing, the order database refuses a
write under a token lower than one it has accepted, so A's write is rolled back.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

from infra.samples import pending_order
from infra.scenarios.play import Run, Scenario, Verdict
from infra.scenarios.stage import ScenarioFailed, Stage, StageSpec, poll
from paxkit.faults import KEY_PREFIX
from services.order.reconcile import BEFORE_WRITE, RECONCILER
from services.order.repository import OrderRepository

TTL_S = 1.0
STALL_S = 3.0
ORDER_ID = "ord-scn-lease-1"
GTID = "gtx-scn-lease-1"


def stale_msg_order(stage: Stage) -> None:
    """A pending msg order an hour old whose begin the coordinator never logged."""
    order = pending_order(ORDER_ID, "msg", GTID)
    db = stage.db("order")
    assert OrderRepository(db).insert(order) is not None
    with db.transaction() as conn:
        conn.exec_driver_sql(
            "UPDATE orders SET created_at = now() - interval '1 hour' WHERE order_id = %(id)s",
            {"id": ORDER_ID},
        )


class Replica:
    """One reconciler replica as a process of its own (infra/scenarios/replica.py)."""

    def __init__(self, stage: Stage, owner: str, ttl_s: float, fencing: bool) -> None:
        self.owner = owner
        command = [sys.executable, "-m", "infra.scenarios.replica", owner, str(ttl_s)]
        log_file = (stage.folder / f"{owner}.log").open("ab")
        self.process = subprocess.Popen(
            [*command, *([] if fencing else ["--no-fencing"])],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log_file.close()

    def pause(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def wait(self, timeout_s: float) -> None:
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            raise ScenarioFailed(f"{self.owner} did not finish its run") from None

    def end(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


def lease_row(stage: Stage) -> dict[str, Any] | None:
    return stage.db("order").fetch_one(
        "SELECT owner, token, expires > now() AS live FROM leases WHERE name = :n", n=RECONCILER
    )


def effects(stage: Stage) -> tuple[int, Any]:
    """(events queued for the order, its next check): what the job writes."""
    db = stage.db("order")
    sent = db.fetch_one("SELECT count(*) AS n FROM outbox WHERE payload->>'gtid' = :g", g=GTID)
    order = db.fetch_one("SELECT next_check_at FROM orders WHERE order_id = :o", o=ORDER_ID)
    assert sent is not None and order is not None
    return int(sent["n"]), order["next_check_at"]


def held_by(stage: Stage, owner: str) -> dict[str, Any] | None:
    row = lease_row(stage)
    return row if row is not None and row["owner"] == owner and row["live"] else None


def at_the_fault_point(stage: Stage) -> bool:
    """Replica A has taken the stall armed before the job's write: it is about to write."""
    return stage.redis.get(f"{KEY_PREFIX}:order:{BEFORE_WRITE}:left") == b"0"


def lock_pause(run: Run, fencing: bool) -> Verdict:
    recording = run.recording
    for lane in ("replica-a", "lease", "replica-b", "order db"):
        recording.lane(lane)
    replicas: list[Replica] = []
    with run.stage(StageSpec(components=("coordinator",))) as stage:
        try:
            stale_msg_order(stage)
            stage.arm("order", BEFORE_WRITE, "stall", seconds=STALL_S)
            a = Replica(stage, "replica-a", TTL_S, fencing)
            replicas.append(a)
            lease_a = poll(lambda: held_by(stage, "replica-a"), 20, "replica A to take the lease")
            recording.mark("lease", f"A holds it, token {lease_a['token']}", "info")
            recording.message("replica-a", "coordinator", "resolve", time.time() - 0.05)
            poll(lambda: at_the_fault_point(stage), 20, "replica A to reach its write")
            a.pause()
            recording.mark("replica-a", "SIGSTOP, about to write", "pause")
            poll(lambda: not held_by(stage, "replica-a"), 20, "A's lease to lapse")
            recording.mark("lease", f"A's lease lapsed ({TTL_S:g}s)", "info")

            b = Replica(stage, "replica-b", 30.0, fencing)
            replicas.append(b)
            b.wait(30)
            lease_b = lease_row(stage)
            assert lease_b is not None
            sent_b, check_b = effects(stage)
            recording.mark("lease", f"B took it, token {lease_b['token']}", "info")
            recording.message(
                "replica-b", "order db", f"events sent ({sent_b}), check at T", time.time() - 0.1
            )

            a.resume()
            recording.mark("replica-a", "SIGCONT: writes what it decided", "resume")
            a.wait(30)
            sent_after, check_after = effects(stage)
        finally:
            for replica in replicas:
                replica.end()
    stale_write = sent_after != sent_b or check_after != check_b
    if stale_write:
        recording.message(
            "replica-a",
            "order db",
            f"token {lease_a['token']} write LANDS",
            time.time() - 0.1,
        )
        recording.mark("order db", f"events sent twice ({sent_after}), B's schedule lost", "bad")
    else:
        recording.message(
            "replica-a", "order db", f"token {lease_a['token']} write", time.time() - 0.1, ok=False
        )
        recording.mark(
            "order db", f"refused: token {lease_a['token']} < {lease_b['token']}", "abort"
        )
    passed = stale_write != fencing
    what = (
        f"the stale holder's write (token {lease_a['token']}) was refused after token "
        f"{lease_b['token']} had written; events sent {sent_after}x, B's schedule stands"
        if not stale_write
        else f"the stale holder (token {lease_a['token']}) wrote after token "
        f"{lease_b['token']}: events sent {sent_after}x instead of {sent_b}x and B's "
        "schedule was overwritten"
    )
    expected = "a fence refuses it" if fencing else "a lease alone lets it through"
    return Verdict(passed, f"{expected}: {what}")


SCENARIOS = (
    Scenario(
        "lock-pause-no-fencing",
        "A lease holder paused past its TTL writes anyway (no fencing token)",
        lambda run: lock_pause(run, fencing=False),
    ),
    Scenario(
        "lock-pause-fencing",
        "A lease holder paused past its TTL is refused by the fencing token",
        lambda run: lock_pause(run, fencing=True),
    ),
)
