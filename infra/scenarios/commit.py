"""Commit protocols when a coordinator dies or a link is cut: who blocks, who disagrees.

`2pc-coordinator-crash`: the coordinator prepares every branch and dies before it
decides. Each participant voted yes and is now uncertain: the coordinator may have decided
either way, so none may decide alone (2PC is a blocking protocol, Skeen 1981). Its
prepared transaction keeps its row locks, and everything that needs those rows waits
until a coordinator comes back and finishes the transaction.
"""

from __future__ import annotations

import time
from typing import Any

from infra.scenarios.observe import (
    PARTICIPANTS,
    PreparedBranch,
    StockUpdate,
    held_for,
    locks_held,
    newest_order,
    prepared_branches,
    settled_order,
    stock,
)
from infra.scenarios.play import Run, Scenario, Verdict
from infra.scenarios.stage import Stage, poll

USER = 7
SKU = "SKU-0010"
OUTAGE_S = 4.0


def order_body(mode: str) -> dict[str, object]:
    """An order with a part for every participant: stock, a coupon and red-packet money."""
    return {
        "user_id": USER,
        "items": [{"sku": SKU, "qty": 1}],
        "coupon_id": f"C-{USER}-1",
        "red_packet_cents": 100,
        "mode": mode,
    }


def place_in_background(stage: Stage, mode: str) -> tuple[dict[str, Any], float]:
    """Send the order and return (its row, when it was sent) once the order service holds it."""
    recording = stage.recording
    sent_at = time.time()
    stage.in_background(lambda: stage.post("/api/orders", json=order_body(mode)))
    order = poll(lambda: newest_order(stage, USER), 20, "the order to be recorded")
    recording.message("client", "order", f"POST /api/orders ({mode})", sent_at)
    recording.message("order", "coordinator", "begin", sent_at + 0.01)
    return order, sent_at


def mark_prepared(stage: Stage, gtid: str, sent_at: float) -> None:
    """Wait until every branch is prepared; draw each prepare and the locks it holds."""

    def every_branch_prepared() -> list[PreparedBranch] | None:
        found = prepared_branches(stage, gtid)
        return found if len(found) == len(PARTICIPANTS) else None

    branches = poll(every_branch_prepared, 20, "every branch to be prepared")
    for branch in branches:
        stage.recording.message(
            "coordinator", branch.participant, "prepare", sent_at + 0.02, branch.prepared_at
        )
        stage.recording.mark(
            branch.participant,
            f"PREPARED, holds {locks_held(stage, branch.gid)} locks",
            "prepare",
            at=branch.prepared_at,
        )


def kill_coordinator(stage: Stage) -> None:
    for name in ("coordinator", "coordinator-worker"):
        stage.running.kill(name, restart=False)
    stage.recording.mark("coordinator", "SIGKILL (web and worker)", "crash")


def restart_coordinator(stage: Stage) -> float:
    """Start the coordinator again; when the restart began."""
    began = stage.recording.mark("coordinator", "restarted: recovery runs", "resume").at
    for name in ("coordinator", "coordinator-worker"):
        stage.running.restart(name)
    return began


def two_phase_coordinator_crash(run: Run) -> Verdict:
    recording = run.recording
    for lane in ("client", "order", "coordinator", *PARTICIPANTS, "dba"):
        recording.lane(lane)
    with run.stage() as stage:
        before = stock(stage, SKU)
        stage.arm("coordinator", "before_decision", "stall", seconds=120)
        order, sent_at = place_in_background(stage, "2pc")
        mark_prepared(stage, order["gtid"], sent_at)
        kill_coordinator(stage)

        update = StockUpdate(stage, SKU)
        recording.mark("dba", f"UPDATE products … {SKU}", "info", at=update.started_at)
        poll(update.waiting_on_lock, 10, "the stock update to wait on the prepared row")
        recording.mark("dba", "waits on the prepared branch's row lock", "blocked")
        blocked_throughout = held_for(OUTAGE_S, lambda: not update.done)
        still_prepared = len(prepared_branches(stage, order["gtid"]))

        restarted_at = restart_coordinator(stage)
        waited_s = update.finish(60)
        assert update.finished_at is not None
        recording.mark("dba", f"UPDATE done after {waited_s:.1f}s", "commit", update.finished_at)
        settled = settled_order(stage, order["order_id"], 60)
        recording.coordinator_timeline(stage.transaction(order["gtid"]))
        recording.mark("order", f"order {settled['status']} ({settled['reason']})", "abort")
        left = len(prepared_branches(stage, order["gtid"]))
        unchanged = stock(stage, SKU) == before

    after_recovery_s = update.finished_at - restarted_at
    passed = (
        blocked_throughout
        and still_prepared == len(PARTICIPANTS)
        and after_recovery_s >= 0
        and settled["status"] == "failed"
        and left == 0
        and unchanged
    )
    return Verdict(
        passed,
        f"2PC blocked: {still_prepared} branches stayed prepared while the coordinator was "
        f"down; an UPDATE of {SKU} waited {waited_s:.1f}s on their row lock and ran "
        f"{after_recovery_s:.1f}s after the coordinator came back; recovery aborted the "
        f"order ({settled['status']}, {settled['reason']}), stock unchanged: {unchanged}",
    )


SCENARIOS = (
    Scenario(
        "2pc-coordinator-crash",
        "2PC: the coordinator dies after every branch prepared",
        two_phase_coordinator_crash,
    ),
)
