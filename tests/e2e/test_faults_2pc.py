"""Crashes and failures at each step of 2PC; every order ends all-or-nothing.

Faults are armed through Redis (paxkit.faults) and the components are killed for real
(SIGKILL of the whole process group) and restarted by the launcher.
"""

from __future__ import annotations

import threading
from typing import Any

from paxkit.faults import arm
from tests.e2e.conftest import prepared_for
from tests.helpers import wait_until

SKU = "SKU-0061"


def order_body(user: int) -> dict[str, Any]:
    return {
        "user_id": user,
        "items": [{"sku": SKU, "qty": 3}],
        "red_packet_cents": 250,
        "coupon_id": f"C-{user}-1",
    }


class Background:
    """An order placed on another thread, so the test can crash things under it."""

    def __init__(self, api, body: dict[str, Any]) -> None:
        self.response = None
        self.error: Exception | None = None
        self.thread = threading.Thread(target=self._run, args=(api, body), daemon=True)
        self.thread.start()

    def _run(self, api, body) -> None:
        try:
            self.response = api.order(body)
        except Exception as err:
            self.error = err

    def join(self) -> None:
        self.thread.join(60)


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


def snapshot(api, user: int) -> dict[str, Any]:
    return {
        "stock": api.product(SKU)["stock"],
        "wallet": api.wallet(user),
        "coupon": api.coupon_status(user, f"C-{user}-1"),
    }


def assert_applied_once(api, user: int, before: dict[str, Any]) -> None:
    after = snapshot(api, user)
    assert after["stock"] == before["stock"] - 3
    assert after["wallet"]["balance_cents"] == before["wallet"]["balance_cents"] - 250
    assert after["coupon"] == "used"


def test_coordinator_killed_after_the_decision_commits_everywhere(
    api, stack, dbs, redis_client, user
):
    before = snapshot(api, user)
    arm(redis_client, "coordinator", "after_decision", "stall", seconds=60)
    placing = Background(api, order_body(user))
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


def test_coordinator_killed_before_the_decision_rolls_back_everywhere(
    api, stack, dbs, redis_client, user
):
    before = snapshot(api, user)
    arm(redis_client, "coordinator", "before_decision", "stall", seconds=60)
    placing = Background(api, order_body(user))
    order = pending_order(dbs, user)
    wait_until(lambda: prepared_for(dbs, order["gtid"]) == 4, what="all four branches prepared")

    stack.kill("coordinator", restart=False)
    placing.join()
    stack.restart("coordinator")

    settled = api.settled(order["order_id"])
    assert (settled["status"], settled["reason"]) == ("failed", "timeout")
    wait_until(lambda: prepared_for(dbs, order["gtid"]) == 0, what="prepared branches gone")
    assert snapshot(api, user) == before


def test_participant_killed_right_after_preparing_is_resolved(api, stack, dbs, redis_client, user):
    before = snapshot(api, user)
    arm(redis_client, "inventory", "after_prepare", "kill")
    response = api.order(order_body(user))
    # The worker died after PREPARE; the retried prepare finds the branch prepared and
    # votes yes again, so the order commits once.
    assert response.status_code == 201, response.text
    order = response.json()
    wait_until(lambda: prepared_for(dbs, order["gtid"]) == 0, what="no prepared branch left")
    assert_applied_once(api, user, before)


def test_participant_hung_while_prepared_is_rolled_back(api, stack, dbs, redis_client, user):
    before = snapshot(api, user)
    arm(redis_client, "inventory", "after_prepare", "stall", seconds=30)
    response = api.order(order_body(user))
    assert response.status_code == 409, response.text
    order = response.json()
    assert order["reason"] == "timeout"
    stack.kill("inventory", restart=False)  # the hung process dies holding nothing
    stack.restart("inventory")
    wait_until(lambda: prepared_for(dbs, order["gtid"]) == 0, what="no prepared branch left")
    assert api.get(f"/api/orders/{order['order_id']}").json()["status"] == "failed"
    assert snapshot(api, user) == before


def test_failed_commits_are_retried_until_done(api, dbs, redis_client, user):
    before = snapshot(api, user)
    arm(redis_client, "redpacket", "before_commit", "fail", times=2)
    response = api.order(order_body(user))
    assert response.status_code == 201, response.text  # the decision was commit
    order = response.json()
    wait_until(lambda: txn_status(dbs, order["gtid"]) == "committed", what="commit finished")
    assert prepared_for(dbs, order["gtid"]) == 0
    assert_applied_once(api, user, before)


def test_participant_down_during_phase_two_is_committed_when_back(
    api, stack, dbs, redis_client, user
):
    before = snapshot(api, user)
    arm(redis_client, "coordinator", "after_decision", "stall", seconds=2)
    placing = Background(api, order_body(user))
    order = pending_order(dbs, user)
    wait_until(lambda: txn_status(dbs, order["gtid"]) == "committing", what="commit decision")
    stack.kill("coupon", restart=False)
    placing.join()
    assert placing.response is not None and placing.response.status_code == 201
    assert prepared_for(dbs, order["gtid"]) >= 1, "the coupon branch waits, prepared"
    stack.restart("coupon")
    wait_until(lambda: txn_status(dbs, order["gtid"]) == "committed", what="commit finished")
    assert prepared_for(dbs, order["gtid"]) == 0
    assert_applied_once(api, user, before)
