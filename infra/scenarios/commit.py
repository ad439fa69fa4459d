"""Commit protocols when a coordinator dies or a link is cut: who blocks, who disagrees.

`2pc-coordinator-crash`: the coordinator prepares every branch and dies before it
decides. Each participant voted yes and is now uncertain: the coordinator may have decided
either way, so none may decide alone (2PC is a blocking protocol, Skeen 1981). Its
prepared transaction keeps its row locks, and everything that needs those rows waits
until a coordinator comes back and finishes the transaction.

`3pc-partition`: three-phase commit removes that blocking with timeouts at the
participants (a branch that has PreCommitted and hears nothing commits; one still
uncertain aborts), and pays for it under a partition. The link from the coordinator to
redpacket is cut just after redpacket PreCommitted: its ack never arrives, the coordinator
aborts everyone it can reach, and redpacket, hearing nothing, commits on its own. The red
packet money is spent while the stock and the coupon are back: the audit reports the
split. Non-blocking and consistent at once is not possible when messages can be lost
(Skeen; with a partition, the CAP trade-off in a commit protocol).

`paxos-coordinator-crash`: Paxos Commit (Gray and Lamport, 2004) keeps the decision at
2F+1 acceptors instead of one coordinator. The coordinator prepares every branch, commit
is chosen at a majority of acceptors, and the coordinator (web and worker) dies before it
tells anyone, with one acceptor's database unavailable as well. A second coordinator
instance takes the transaction over with a higher ballot, learns that commit was chosen
(any two majorities share an acceptor) and finishes it: the operator's UPDATE waits only
for the takeover, never for the dead coordinator. FLP still holds: with duelling
coordinators Paxos may take more rounds, but it never chooses two values.
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
from infra.scenarios.stage import Stage, StageSpec, poll
from paxkit.migrate import refusing_connections

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


PARTITIONED = "redpacket"
THREE_PC = StageSpec(
    env={
        "PAXMART_3PC_MODE": "1",
        "PAXMART_3PC_UNCERTAIN_TIMEOUT_S": "4",
        "PAXMART_3PC_PRECOMMIT_TIMEOUT_S": "5",
    },
    partitioned=PARTITIONED,
)


def wallet(stage: Stage) -> dict[str, Any]:
    return dict(stage.get(f"/api/users/{USER}/wallet").json())


def coupon_status(stage: Stage) -> str:
    items = stage.get(f"/api/users/{USER}/coupons").json()["items"]
    return str(next(c["status"] for c in items if c["coupon_id"] == f"C-{USER}-1"))


def split_reported(stage: Stage, gtid: str) -> dict[str, Any] | None:
    audit = stage.admin("GET", "/admin/audit").json()
    found = [v for v in audit.get("violations", []) if v.get("gtid") == gtid]
    return next((v for v in found if v.get("check") == "threepc_split"), None)


def three_phase_partition(run: Run) -> Verdict:
    recording = run.recording
    for lane in ("client", "order", "coordinator", *PARTICIPANTS, "audit"):
        recording.lane(lane)
    with run.stage(THREE_PC) as stage:
        assert stage.proxy is not None
        before = (stock(stage, SKU), wallet(stage)["balance_cents"], coupon_status(stage))
        stage.arm(PARTITIONED, "after_precommit", "stall", seconds=1.5)  # its ack waits
        order, sent_at = place_in_background(stage, "3pc")
        gtid = order["gtid"]

        def precommitted() -> PreparedBranch | None:
            found = [b for b in prepared_branches(stage, gtid) if b.participant == PARTITIONED]
            return found[0] if found else None

        branch = poll(precommitted, 20, f"{PARTITIONED} to PreCommit")
        stage.proxy.partition()
        recording.message(
            "coordinator", PARTITIONED, "PreCommit", sent_at + 0.02, branch.prepared_at
        )
        recording.mark(PARTITIONED, "PRECOMMITTED (prepared)", "prepare", branch.prepared_at)
        recording.mark("coordinator", f"link to {PARTITIONED} cut", "crash")

        def only_partitioned_left() -> bool:
            left = {b.participant for b in prepared_branches(stage, gtid)}
            return left <= {PARTITIONED}

        poll(only_partitioned_left, 30, "the reachable branches to be aborted")
        poll(lambda: not precommitted(), 30, f"{PARTITIONED} to commit on its own")
        recording.mark(PARTITIONED, "hears nothing: COMMITS by timeout", "commit")
        settled = settled_order(stage, order["order_id"], 60)
        recording.coordinator_timeline(stage.transaction(gtid))
        recording.mark("order", f"order {settled['status']} ({settled['reason']})", "abort")
        after = (stock(stage, SKU), wallet(stage)["balance_cents"], coupon_status(stage))
        stage.proxy.heal()
        split = poll(lambda: split_reported(stage, gtid), 30, "the audit to report the split")
        recording.mark("audit", f"threepc_split: {split['committed']} vs {split['aborted']}", "bad")
    spent = before[1] - after[1]
    passed = (
        settled["status"] == "failed"
        and after[0] == before[0]
        and after[2] == before[2]
        and spent == 100
        and PARTITIONED in split["committed"]
    )
    return Verdict(
        passed,
        f"3PC did not block and did not agree: the coordinator aborted the order "
        f"({settled['reason']}) and {', '.join(split['aborted'])} rolled back, while "
        f"{PARTITIONED}, cut off after its PreCommit, committed by its timeout "
        f"({spent} cents spent, stock and coupon back); the audit reports threepc_split",
    )


ACCEPTORS = ("acceptor1", "acceptor2", "acceptor3")
DOWN_ACCEPTOR = "acceptor3"


def acceptor_state(stage: Stage, acceptor: str, gtid: str) -> dict[str, Any] | None:
    return stage.db(acceptor).fetch_one(
        "SELECT promised_round, accepted_round, accepted_value FROM paxos_instances "
        "WHERE instance = :g",
        g=gtid,
    )


def chosen_at(stage: Stage, gtid: str, acceptors: tuple[str, ...]) -> list[str]:
    """The acceptors that have accepted commit for the transaction."""
    states = {a: acceptor_state(stage, a, gtid) for a in acceptors}
    return [a for a, st in states.items() if st and st["accepted_value"] == "commit"]


def paxos_coordinator_crash(run: Run) -> Verdict:
    recording = run.recording
    for lane in ("client", "order", "coordinator", "coordinator-2", *ACCEPTORS, *PARTICIPANTS):
        recording.lane(lane)
    recording.lane("dba")
    with run.stage() as stage:
        before = stock(stage, SKU)
        stage.arm("coordinator", "paxos_chosen", "stall", seconds=120)
        order, sent_at = place_in_background(stage, "paxos")
        gtid = order["gtid"]
        mark_prepared(stage, gtid, sent_at)

        def chosen_by_a_majority() -> list[str] | None:
            found = chosen_at(stage, gtid, ACCEPTORS)
            return found if len(found) > len(ACCEPTORS) // 2 else None

        majority = poll(chosen_by_a_majority, 20, "commit to be chosen at a majority")
        for acceptor in majority:
            recording.message("coordinator", acceptor, "Accept(commit, ballot 0)", sent_at + 0.05)
            recording.mark(acceptor, "accepted commit", "commit")
        kill_coordinator(stage)
        stage.db(DOWN_ACCEPTOR).dispose()
        with refusing_connections(stage.settings.db_urls[DOWN_ACCEPTOR]):
            recording.mark(DOWN_ACCEPTOR, "database down", "crash")
            update = StockUpdate(stage, SKU)
            recording.mark("dba", f"UPDATE products … {SKU}", "info", at=update.started_at)
            poll(update.waiting_on_lock, 10, "the stock update to wait on the prepared row")
            recording.mark("dba", "waits on the prepared branch's row lock", "blocked")
            took_over_at = recording.mark("coordinator-2", "second instance starts", "resume").at
            second = stage.running.add_worker("coordinator")
            waited_s = update.finish(60)
            assert update.finished_at is not None
            recording.mark(
                "dba", f"UPDATE done after {waited_s:.1f}s", "commit", update.finished_at
            )
            poll(lambda: not prepared_branches(stage, gtid), 30, "every branch to be finished")
            learned = {a: acceptor_state(stage, a, gtid) for a in ACCEPTORS if a != DOWN_ACCEPTOR}
            for acceptor, state in learned.items():
                if state is not None:
                    recording.mark(acceptor, f"promised round {state['promised_round']}", "info")
            coordinator_down = not stage.running.is_running("coordinator")
        stage.running.kill(second, restart=False)
        for name in ("coordinator", "coordinator-worker"):
            stage.running.restart(name)
        settled = settled_order(stage, order["order_id"], 60)
        detail = stage.transaction(gtid)
        recording.coordinator_timeline(detail, after=took_over_at, later="coordinator-2")
        recording.mark("order", f"order {settled['status']}", "commit")
        applied_once = stock(stage, SKU) == before - 1
    higher = all(s is not None and s["promised_round"] > 0 for s in learned.values())
    passed = (
        coordinator_down
        and higher
        and settled["status"] == "confirmed"
        and applied_once
        and update.finished_at > took_over_at
    )
    return Verdict(
        passed,
        f"Paxos Commit did not block: commit was chosen at {', '.join(majority)}, then the "
        f"coordinator died and {DOWN_ACCEPTOR} was down; a second coordinator took over with "
        f"a higher ballot, learned commit and finished it while the first stayed dead; the "
        f"UPDATE waited {waited_s:.1f}s; the order is {settled['status']}, stock taken once: "
        f"{applied_once}",
    )


SCENARIOS = (
    Scenario(
        "2pc-coordinator-crash",
        "2PC: the coordinator dies after every branch prepared",
        two_phase_coordinator_crash,
    ),
    Scenario(
        "3pc-partition",
        "3PC: the link to one participant is cut after its PreCommit",
        three_phase_partition,
    ),
    Scenario(
        "paxos-coordinator-crash",
        "Paxos Commit: the coordinator dies after commit was chosen; another finishes it",
        paxos_coordinator_crash,
    ),
)
