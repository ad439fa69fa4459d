"""Crashes, hangs and failures at each step of every mode; every order ends all-or-nothing,
and no answer lies about it.

Faults are armed through Redis (paxkit.faults) and components are killed for real (SIGKILL
of the whole process group, or of one worker at a fault point) and restarted.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import text

from paxkit.faults import arm
from tests.e2e.conftest import prepared_for
from tests.helpers import wait_until

SKU = "SKU-0061"
BRANCHES = 3  # inventory, coupon, redpacket: the order is no branch, in any mode


def order_body(user: int, mode: str) -> dict[str, Any]:
    return {
        "user_id": user,
        "items": [{"sku": SKU, "qty": 3}],
        "red_packet_cents": 250,
        "coupon_id": f"C-{user}-1",
        "mode": mode,
    }


class Background:
    """An order placed on another thread, so the test can crash things under it."""

    def __init__(self, api, body: dict[str, Any]) -> None:
        self.response = None
        self.thread = threading.Thread(target=self._run, args=(api, body), daemon=True)
        self.thread.start()

    def _run(self, api, body) -> None:
        self.response = api.order(body)

    def join(self) -> None:
        self.thread.join(60)
        assert not self.thread.is_alive()


def pending_order(dbs, user: int) -> dict[str, Any]:
    return wait_until(
        lambda: dbs["order"].fetch_one(
            "SELECT order_id, gtid FROM orders WHERE user_id = :u AND status = 'pending'", u=user
        ),
        what=f"a pending order of user {user}",
    )


def txn_status(dbs, gtid: str) -> str | None:
    row = dbs["coordinator"].fetch_one("SELECT status FROM global_txns WHERE gtid = :g", g=gtid)
    return row["status"] if row else None


def forward_done(dbs, mode: str, gtid: str) -> bool:
    """Every branch has done its forward step (prepared, tried, acted, voted yes at
    CanCommit)."""
    if mode in ("2pc", "paxos"):
        return prepared_for(dbs, gtid) == BRANCHES
    if mode == "3pc":
        sql = "SELECT count(*) AS n FROM threepc_branches WHERE gtid = :g AND state = 'uncertain'"
        return across_branches(dbs, sql, g=gtid) == BRANCHES
    op = "try" if mode == "tcc" else "action"
    sql = "SELECT count(*) AS n FROM barrier WHERE gtid = :g AND op = :op AND written_by = :op"
    return across_branches(dbs, sql, g=gtid, op=op) == BRANCHES


def across_branches(dbs, count_sql: str, **params: Any) -> int:
    """A `count(*) AS n` query summed over the participants' databases."""
    total = 0
    for name in ("inventory", "coupon", "redpacket"):
        row = dbs[name].fetch_one(count_sql, **params)
        total += int(row["n"]) if row else 0
    return total


def snapshot(api, user: int) -> dict[str, Any]:
    return {
        "stock": api.product(SKU)["stock"],
        "wallet": api.wallet(user),
        "coupon": api.coupon_status(user, f"C-{user}-1"),
    }


def assert_applied_once(api, user: int, before: dict[str, Any]) -> None:
    after = snapshot(api, user)
    assert after["stock"] == before["stock"] - 3
    assert after["wallet"] == {
        **before["wallet"],
        "frozen_cents": 0,
        "balance_cents": before["wallet"]["balance_cents"] - 250,
    }
    assert after["coupon"] == "used"


@pytest.mark.parametrize("mode", ["2pc", "tcc", "saga", "3pc", "paxos"])
def test_coordinator_killed_after_the_decision_commits_everywhere(
    api, stack, dbs, redis_client, user, mode
):
    before = snapshot(api, user)
    arm(redis_client, "coordinator", "after_decision", "stall", seconds=60)
    placing = Background(api, order_body(user, mode))
    order = pending_order(dbs, user)
    wait_until(lambda: txn_status(dbs, order["gtid"]) == "committing", what="commit decision")

    stack.kill("coordinator", restart=False)
    placing.join()
    assert placing.response is not None and placing.response.status_code == 504
    stack.restart("coordinator")

    assert api.settled(order["order_id"])["status"] == "confirmed"
    wait_until(lambda: txn_status(dbs, order["gtid"]) == "committed", what="log says committed")
    assert prepared_for(dbs, order["gtid"]) == 0
    assert_applied_once(api, user, before)


@pytest.mark.parametrize("mode", ["2pc", "tcc", "saga", "3pc", "paxos"])
def test_coordinator_killed_before_the_decision_undoes_everything(
    api, stack, dbs, redis_client, user, mode
):
    before = snapshot(api, user)
    arm(redis_client, "coordinator", "before_decision", "stall", seconds=60)
    placing = Background(api, order_body(user, mode))
    order = pending_order(dbs, user)
    wait_until(lambda: forward_done(dbs, mode, order["gtid"]), what="every forward step done")

    stack.kill("coordinator", restart=False)
    placing.join()
    stack.restart("coordinator")

    settled = api.settled(order["order_id"])
    assert (settled["status"], settled["reason"]) == ("failed", "timeout")
    wait_until(lambda: txn_status(dbs, order["gtid"]) == "aborted", what="log says aborted")
    assert prepared_for(dbs, order["gtid"]) == 0
    assert snapshot(api, user) == before


PREPARED_POINTS = [("2pc", "after_prepare"), ("3pc", "after_precommit")]


@pytest.mark.parametrize(("mode", "point"), PREPARED_POINTS)
def test_participant_killed_right_after_preparing_is_resolved(
    api, dbs, redis_client, user, mode, point
):
    before = snapshot(api, user)
    arm(redis_client, "inventory", point, "kill")
    response = api.order(order_body(user, mode))
    # The worker died after PREPARE; the retried prepare (3pc: PreCommit) finds the branch
    # prepared and votes yes again, so the order commits once.
    assert response.status_code == 201, response.text
    order = response.json()
    wait_until(lambda: prepared_for(dbs, order["gtid"]) == 0, what="no prepared branch left")
    assert_applied_once(api, user, before)


@pytest.mark.parametrize(("mode", "point"), PREPARED_POINTS)
def test_participant_hung_while_prepared_is_rolled_back(
    api, stack, dbs, redis_client, user, mode, point
):
    before = snapshot(api, user)
    arm(redis_client, "inventory", point, "stall", seconds=30)
    response = api.order(order_body(user, mode))
    assert response.status_code == 409, response.text
    order = response.json()
    assert order["reason"] == "timeout"
    stack.kill("inventory", restart=False)  # the hung process dies holding nothing
    stack.restart("inventory")
    wait_until(lambda: prepared_for(dbs, order["gtid"]) == 0, what="no prepared branch left")
    assert api.get(f"/api/orders/{order['order_id']}").json()["status"] == "failed"
    assert snapshot(api, user) == before


@pytest.mark.parametrize(
    ("mode", "point"),
    [("2pc", "before_commit"), ("tcc", "before_confirm"), ("3pc", "before_docommit")],
)
def test_failed_completions_are_retried_until_done(api, dbs, redis_client, user, mode, point):
    before = snapshot(api, user)
    arm(redis_client, "redpacket", point, "fail", times=2)
    response = api.order(order_body(user, mode))
    assert response.status_code == 201, response.text  # the decision was commit
    order = response.json()
    wait_until(lambda: txn_status(dbs, order["gtid"]) == "committed", what="commit finished")
    assert prepared_for(dbs, order["gtid"]) == 0
    assert_applied_once(api, user, before)


@pytest.mark.parametrize("mode", ["2pc", "tcc", "3pc"])
def test_participant_down_during_completion_finishes_when_back(
    api, stack, dbs, redis_client, user, mode
):
    before = snapshot(api, user)
    arm(redis_client, "coordinator", "after_decision", "stall", seconds=2)
    placing = Background(api, order_body(user, mode))
    order = pending_order(dbs, user)
    wait_until(lambda: txn_status(dbs, order["gtid"]) == "committing", what="commit decision")
    stack.kill("coupon", restart=False)
    placing.join()
    assert placing.response is not None and placing.response.status_code == 201
    assert txn_status(dbs, order["gtid"]) == "committing", "the coupon branch is still owed"
    stack.restart("coupon")
    wait_until(lambda: txn_status(dbs, order["gtid"]) == "committed", what="commit finished")
    assert prepared_for(dbs, order["gtid"]) == 0
    assert_applied_once(api, user, before)


def test_tcc_shows_frozen_and_reserved_while_in_flight(api, dbs, redis_client, user):
    before = snapshot(api, user)
    arm(redis_client, "coordinator", "before_decision", "stall", seconds=1.5)
    placing = Background(api, order_body(user, "tcc"))
    order = pending_order(dbs, user)
    wait_until(lambda: forward_done(dbs, "tcc", order["gtid"]), what="every Try done")
    assert api.wallet(user)["frozen_cents"] == 250
    assert api.coupon_status(user, f"C-{user}-1") == "reserved"
    assert api.product(SKU)["stock"] == before["stock"] - 3
    placing.join()
    assert placing.response is not None and placing.response.status_code == 201
    assert_applied_once(api, user, before)


def test_tcc_global_timeout_cancels_and_unfreezes(api, dbs, redis_client, user):
    before = snapshot(api, user)
    arm(redis_client, "coordinator", "before_decision", "stall", seconds=10)
    placing = Background(api, order_body(user, "tcc"))
    order = pending_order(dbs, user)
    wait_until(lambda: forward_done(dbs, "tcc", order["gtid"]), what="every Try done")
    assert api.wallet(user)["frozen_cents"] == 250
    # The Try phase outlives the global timeout: recovery cancels it while it hangs.
    wait_until(
        lambda: txn_status(dbs, order["gtid"]) == "aborted",
        timeout_s=30,
        what="recovery to cancel the timed-out transaction",
    )
    assert snapshot(api, user) == before
    placing.join()
    settled = api.settled(order["order_id"])
    assert (settled["status"], settled["reason"]) == ("failed", "timeout")
    assert snapshot(api, user) == before


def test_tcc_cancel_overtaking_a_slow_try_leaves_nothing_frozen(
    api, stack, dbs, redis_client, user
):
    before = snapshot(api, user)
    arm(redis_client, "redpacket", "before_try", "stall", seconds=4)  # > branch timeout
    response = api.order(order_body(user, "tcc"))
    assert response.status_code == 409, response.text
    order = response.json()
    assert order["reason"] == "timeout"
    log_file = stack.log_file("redpacket")
    wait_until(
        lambda: f"hanging try of {order['gtid']} refused" in log_file.read_text(),
        timeout_s=15,
        what="the late Try to arrive and be refused",
    )
    assert snapshot(api, user) == before
    assert dbs["redpacket"].fetch_one(
        "SELECT count(*) AS n FROM wallet_holds WHERE gtid = :g", g=order["gtid"]
    ) == {"n": 0}


def orders_of(dbs, user: int) -> list[str]:
    rows = dbs["order"].fetch_all("SELECT order_id FROM orders WHERE user_id = :u", u=user)
    return [r["order_id"] for r in rows]


def final_answer(api, body: dict[str, Any], key: dict[str, str], order_id: str) -> Any:
    """Retry with the key until the answer is final, as a client does: a retry can land on
    the worker being restarted and be outcome_unknown again, always naming the same order."""

    def attempt() -> Any:
        response = api.order(body, headers=key)
        if response.status_code < 500:
            return response
        assert response.json()["error"]["order_id"] == order_id, response.text
        return None

    return wait_until(attempt, timeout_s=90, interval_s=0.5, what="a final answer to a retry")


def violations_of(api, order_id: str) -> list[dict[str, Any]]:
    return [v for v in api.audit()["violations"] if v.get("order_id") == order_id]


@pytest.mark.parametrize(
    ("action", "status"),
    [("kill", 503), ("stall", 504)],  # the connection breaks / the gateway stops waiting
)
def test_order_service_lost_mid_placement_is_outcome_unknown_and_a_retry_answers_it(
    api, dbs, redis_client, user, action, status
):
    before = snapshot(api, user)
    body, key = order_body(user, "2pc"), {"Idempotency-Key": f"lost-{user}"}
    # After the coordinator committed, before the order row follows: stalled past the
    # gateway's order timeout (txn timeout + 5 s), or killed.
    arm(redis_client, "order", "before_settle", action, seconds=12)
    lost = api.order(body, headers=key)
    error = lost.json()["error"]
    assert (lost.status_code, error["code"]) == (status, "outcome_unknown"), lost.text
    order_id = error["order_id"]
    assert lost.headers["Location"] == error["location"] == f"/api/orders/{order_id}"

    retried = final_answer(api, body, key, order_id)
    assert retried.status_code in (201, 202), retried.text  # pending until the row follows
    assert (retried.json()["order_id"], retried.headers["Location"]) == (
        order_id,
        lost.headers["Location"],
    )
    assert api.settled(order_id)["status"] == "confirmed"
    replayed = api.order(body, headers=key)
    assert (replayed.status_code, replayed.json()) == (retried.status_code, retried.json())
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert orders_of(dbs, user) == [order_id]
    assert_applied_once(api, user, before)
    assert violations_of(api, order_id) == []


def test_a_database_failure_after_the_outcome_still_answers_the_outcome(
    api, dbs, redis_client, user
):
    """The order row can't be written right after the coordinator answered (here it is
    locked past the lock timeout): the answer is the coordinator's outcome all the same,
    and the reconciler brings the row in line."""
    before = snapshot(api, user)
    arm(redis_client, "coordinator", "after_decision", "stall", seconds=2)
    placing = Background(api, order_body(user, "2pc"))
    order = pending_order(dbs, user)
    with dbs["order"].transaction() as conn:
        conn.execute(
            text("SELECT 1 FROM orders WHERE order_id = :o FOR UPDATE"), {"o": order["order_id"]}
        )
        placing.join()
    assert placing.response is not None and placing.response.status_code == 201
    assert placing.response.json()["status"] == "confirmed"
    assert api.settled(order["order_id"])["status"] == "confirmed"
    assert_applied_once(api, user, before)
    assert violations_of(api, order["order_id"]) == []
