"""Crashes, hangs and failures at each step of every mode; every order ends all-or-nothing.

Faults are armed through Redis (paxkit.faults) and components are killed for real (SIGKILL
of the whole process group) and restarted by the launcher.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

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
    """Every branch has done its forward step (prepared, tried, acted)."""
    if mode == "2pc":
        return prepared_for(dbs, gtid) == BRANCHES
    op = "try" if mode == "tcc" else "action"
    done = 0
    for name in ("inventory", "coupon", "redpacket"):
        row = dbs[name].fetch_one(
            "SELECT count(*) AS n FROM barrier WHERE gtid = :g AND op = :op AND written_by = :op",
            g=gtid,
            op=op,
        )
        done += int(row["n"]) if row else 0
    return done == BRANCHES


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


@pytest.mark.parametrize("mode", ["2pc", "tcc", "saga"])
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


@pytest.mark.parametrize("mode", ["2pc", "tcc", "saga"])
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


def test_participant_killed_right_after_preparing_is_resolved(api, dbs, redis_client, user):
    before = snapshot(api, user)
    arm(redis_client, "inventory", "after_prepare", "kill")
    response = api.order(order_body(user, "2pc"))
    # The worker died after PREPARE; the retried prepare finds the branch prepared and
    # votes yes again, so the order commits once.
    assert response.status_code == 201, response.text
    order = response.json()
    wait_until(lambda: prepared_for(dbs, order["gtid"]) == 0, what="no prepared branch left")
    assert_applied_once(api, user, before)


def test_participant_hung_while_prepared_is_rolled_back(api, stack, dbs, redis_client, user):
    before = snapshot(api, user)
    arm(redis_client, "inventory", "after_prepare", "stall", seconds=30)
    response = api.order(order_body(user, "2pc"))
    assert response.status_code == 409, response.text
    order = response.json()
    assert order["reason"] == "timeout"
    stack.kill("inventory", restart=False)  # the hung process dies holding nothing
    stack.restart("inventory")
    wait_until(lambda: prepared_for(dbs, order["gtid"]) == 0, what="no prepared branch left")
    assert api.get(f"/api/orders/{order['order_id']}").json()["status"] == "failed"
    assert snapshot(api, user) == before


@pytest.mark.parametrize(("mode", "point"), [("2pc", "before_commit"), ("tcc", "before_confirm")])
def test_failed_completions_are_retried_until_done(api, dbs, redis_client, user, mode, point):
    before = snapshot(api, user)
    arm(redis_client, "redpacket", point, "fail", times=2)
    response = api.order(order_body(user, mode))
    assert response.status_code == 201, response.text  # the decision was commit
    order = response.json()
    wait_until(lambda: txn_status(dbs, order["gtid"]) == "committed", what="commit finished")
    assert prepared_for(dbs, order["gtid"]) == 0
    assert_applied_once(api, user, before)


@pytest.mark.parametrize("mode", ["2pc", "tcc"])
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
