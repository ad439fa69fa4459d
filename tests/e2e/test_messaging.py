"""The msg mode over RabbitMQ: 202 at once, settled later, nothing lost, nothing twice.

Failures are real: consumer and relay processes are SIGKILLed by fault points, a poison
message is published by hand (the broker's own restart is in test_msg_never_strands.py,
on a node of that module's own).
"""

from __future__ import annotations

import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import pytest
from sqlalchemy import text
from werkzeug.serving import make_server

from paxkit.faults import arm
from paxkit.messaging import PLACED, branch_key
from tests.e2e.conftest import ADMIN, publish_raw
from tests.helpers import wait_until

SKU = "SKU-0071"
PARTICIPANTS = ("inventory", "coupon", "redpacket")


def order_body(user: int, **extra: Any) -> dict[str, Any]:
    return {
        "user_id": user,
        "items": [{"sku": SKU, "qty": 2}],
        "red_packet_cents": 150,
        "coupon_id": f"C-{user}-1",
        "mode": "msg",
        **extra,
    }


def accepted(api, body: dict[str, Any]) -> dict[str, Any]:
    response = api.order(body)
    assert response.status_code == 202, response.text
    order = response.json()
    assert order["status"] == "pending"
    assert response.headers["Location"] == f"/api/orders/{order['order_id']}"
    return dict(order)


def fresh_stock(api) -> int:
    """Available stock as inventory has it now: a stale copy (served while a restarted
    inventory worker boots) is not an answer."""

    def probe() -> dict[str, Any] | None:
        response = api.get(f"/api/products/{SKU}")
        return None if response.headers.get("X-Cache") == "STALE" else response.json()

    return int(wait_until(probe, what="a fresh stock read")["stock"])


def snapshot(api, user: int) -> dict[str, Any]:
    return {
        "stock": fresh_stock(api),
        "wallet": api.wallet(user),
        "coupon": api.coupon_status(user, f"C-{user}-1"),
    }


def assert_applied_once(api, user: int, before: dict[str, Any], orders: int = 1) -> None:
    after = snapshot(api, user)
    assert after["stock"] == before["stock"] - 2 * orders
    assert after["wallet"] == {
        **before["wallet"],
        "balance_cents": before["wallet"]["balance_cents"] - 150 * orders,
    }
    assert after["coupon"] == "used"


def test_msg_order_is_accepted_then_confirmed(api, user):
    before = snapshot(api, user)
    order = accepted(api, order_body(user))
    settled = api.settled(order["order_id"])
    assert (settled["status"], settled["reason"]) == ("confirmed", None)
    assert_applied_once(api, user, before)
    txn = api.get(f"/admin/transactions/{order['gtid']}", headers=ADMIN).json()
    assert (txn["mode"], txn["status"]) == ("msg", "committed")
    assert {(e["branch"], e["op"]) for e in txn["timeline"]} >= {
        ("inventory", "action"),
        ("coupon", "action"),
        ("redpacket", "action"),
    }


def test_business_rejection_compensates_the_others(api, user):
    before = snapshot(api, user)
    order = accepted(
        api, order_body(user, red_packet_cents=100001, items=[{"sku": SKU, "qty": 20}])
    )
    settled = api.settled(order["order_id"])
    assert (settled["status"], settled["reason"]) == ("failed", "insufficient_balance")
    wait_until(lambda: snapshot(api, user) == before, what="compensations to land")
    wallet = api.wallet(user)
    assert wallet["frozen_cents"] == 0


def test_consumer_killed_after_commit_before_ack_applies_once(api, dbs, redis_client, user):
    before = snapshot(api, user)
    arm(redis_client, "inventory", "consumer_after_commit", "kill")
    order = accepted(api, order_body(user))
    assert api.settled(order["order_id"], timeout_s=60)["status"] == "confirmed"
    assert_applied_once(api, user, before)
    moved = dbs["inventory"].fetch_one(
        "SELECT sum(qty) AS n FROM stock_movements WHERE gtid = :g", g=order["gtid"]
    )
    assert moved == {"n": 2}


def test_relay_killed_after_publish_before_marking_applies_once(api, dbs, redis_client, user):
    before = snapshot(api, user)
    arm(redis_client, "order", "relay_after_publish", "kill")
    # The relay shares its process with web workers: the kill may take the response too.
    response = api.order(order_body(user))
    assert response.status_code in (202, 503), response.text
    order = wait_until(
        lambda: dbs["order"].fetch_one("SELECT order_id FROM orders WHERE user_id = :u", u=user),
        what="the order row",
    )
    assert api.settled(order["order_id"], timeout_s=60)["status"] == "confirmed"
    assert_applied_once(api, user, before)
    wait_until(
        lambda: (
            dbs["order"].fetch_one("SELECT count(*) AS n FROM outbox WHERE sent_at IS NULL")
            == {"n": 0}
        ),
        what="the outbox to drain",
    )


def dead_letters(api) -> dict[str, Any]:
    response = api.get("/admin/dead-letters", headers=ADMIN)
    assert response.status_code == 200, response.text
    return dict(response.json())


def replay(api, body: dict[str, Any] | None) -> Any:
    return api.post("/admin/dead-letters/replay", json=body, headers=ADMIN)


def test_poison_message_is_dead_lettered_listed_replayed_and_the_rest_flows(
    api, dbs, settings, user
):
    message_id = str(uuid.uuid4())
    for name in PARTICIPANTS:
        publish_raw(settings, branch_key(PLACED, name), b"{not json", message_id)

    def poisoned() -> list[dict[str, Any]]:
        items = [i for i in dead_letters(api)["items"] if i["message_id"] == message_id]
        return items if len(items) == 3 else []

    letters = wait_until(poisoned, what="the poison message in every participant's dead letters")
    assert {(i["component"], i["routing_key"], i["body"], i["attempts"]) for i in letters} == {
        (name, branch_key(PLACED, name), "{not json", 1) for name in PARTICIPANTS
    }
    assert all("not JSON" in i["reason"] for i in letters)
    assert api.get("/admin/dead-letters").status_code == 401
    assert replay(api, {"ids": ["nope"]}).status_code == 400

    one = next(i for i in letters if i["component"] == "coupon")
    answer = replay(api, {"ids": [one["id"], str(uuid.uuid4())]}).json()
    assert answer["replayed"] == [one["id"]]
    assert len(answer["not_found"]) == 1
    # Still poison: it dies again, in the same consumer, under the same message id.
    back = wait_until(
        lambda: [i for i in poisoned() if i["component"] == "coupon" and i["id"] != one["id"]],
        what="the replayed message dead again",
    )
    assert back[0]["message_id"] == message_id

    every = sorted(i["id"] for i in poisoned())
    assert sorted(replay(api, None).json()["replayed"]) == every
    for name in PARTICIPANTS:  # leave nothing for the quiescence checks
        wait_until(partial(dead_in, dbs, name, message_id), what=f"{name}'s copy dead again")
        with dbs[name].transaction() as conn:
            conn.execute(text("DELETE FROM dead_letters WHERE message_id = :m"), {"m": message_id})
    assert dead_letters(api)["total"] == 0
    order = accepted(api, order_body(user))
    assert api.settled(order["order_id"])["status"] == "confirmed"


def dead_in(dbs, name: str, message_id: str) -> bool:
    return dbs[name].fetch_one(
        "SELECT 1 AS one FROM dead_letters WHERE message_id = :m", m=message_id
    ) == {"one": 1}


def newest_msg_txn(dbs, since: str) -> dict[str, Any] | None:
    return dbs["coordinator"].fetch_one(
        "SELECT gtid, status FROM global_txns WHERE mode = 'msg' AND created_at > :t "
        "ORDER BY created_at DESC LIMIT 1",
        t=since,
    )


def db_now(dbs) -> str:
    return str(dbs["coordinator"].fetch_one("SELECT now()::text AS t")["t"])


def test_an_initiator_killed_before_its_local_commit_leaves_nothing(api, dbs, redis_client, user):
    before, since = snapshot(api, user), db_now(dbs)
    arm(redis_client, "order", "msg_before_commit", "kill")
    response = api.order(order_body(user))
    assert (response.status_code, response.json()["error"]["code"]) == (503, "outcome_unknown")
    assert api.get(response.headers["Location"]).status_code == 404, "it was never recorded"
    assert newest_msg_txn(dbs, since) is None, "no event left the order service"
    assert snapshot(api, user) == before


def test_an_accepted_order_called_nothing_but_its_own_database(api, dbs, user):
    """Peak shaving: the answer is one local commit; the transaction begins from the event."""
    since = db_now(dbs)
    order = accepted(api, order_body(user))
    outbox = dbs["order"].fetch_all(
        "SELECT routing_key FROM outbox WHERE payload->>'gtid' = :g ORDER BY id", g=order["gtid"]
    )
    assert [r["routing_key"] for r in outbox] == [
        "txn.begun",
        "txn.placed.coupon",
        "txn.placed.inventory",
        "txn.placed.redpacket",
    ]
    assert api.settled(order["order_id"])["status"] == "confirmed"
    assert newest_msg_txn(dbs, since) == {"gtid": order["gtid"], "status": "committed"}


def test_burst_of_orders_is_accepted_fast_and_all_settle(api, dbs):
    users = range(600, 800)
    bodies = [
        {
            "user_id": u,
            "items": [{"sku": f"SKU-{(n % 40) + 1:04d}", "qty": 1}],
            "red_packet_cents": 1,
            "mode": "msg",
        }
        for n, u in enumerate(list(users) * 10)
    ]
    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(pool.map(api.order, bodies))
    assert [r.status_code for r in responses] == [202] * len(bodies)
    ids = [r.json()["order_id"] for r in responses]

    def unsettled() -> int:
        row = dbs["order"].fetch_one(
            "SELECT count(*) AS n FROM orders WHERE order_id = ANY(:ids) AND status = 'pending'",
            ids=ids,
        )
        return int(row["n"]) if row else -1

    wait_until(
        lambda: unsettled() == 0, timeout_s=240, interval_s=1.0, what="all 2,000 orders to settle"
    )
    statuses = dbs["order"].fetch_all(
        "SELECT status, count(*) AS n FROM orders WHERE order_id = ANY(:ids) GROUP BY status",
        ids=ids,
    )
    assert statuses == [{"status": "confirmed", "n": len(bodies)}]
    assert api.audit()["ok"]


class FlakyReceiver:
    """A notification receiver that fails its first `failures` calls."""

    def __init__(self, failures: int) -> None:
        from flask import Flask, request

        self.failures = failures
        self.received: list[dict[str, Any]] = []
        self.calls = 0
        app = Flask("receiver")

        @app.post("/hook")
        def hook() -> Any:
            self.calls += 1
            if self.calls <= self.failures:
                return {"error": "not now"}, 503
            self.received.append(json.loads(request.data))
            return {"ok": True}

        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"


@pytest.mark.parametrize("mode", ["msg", "2pc"])
def test_notification_receiver_failing_at_first_is_eventually_served(api, dbs, user, mode):
    receiver = FlakyReceiver(failures=2)
    try:
        response = api.order({**order_body(user), "mode": mode, "notify_url": receiver.url})
        order = response.json()
        wait_until(lambda: receiver.received, timeout_s=30, what="a delivered notification")
        assert receiver.received[0]["order_id"] == order["order_id"]
        assert receiver.received[0]["status"] == "confirmed"

        def statuses() -> list[int]:
            attempts = dbs["order"].fetch_all(
                "SELECT a.attempt, a.status_code FROM notification_attempts a "
                "JOIN notifications n ON n.id = a.notification_id WHERE n.order_id = :o "
                "ORDER BY a.attempt",
                o=order["order_id"],
            )
            return [a["status_code"] for a in attempts]

        # The notifier records an attempt once the receiver's answer is back.
        wait_until(lambda: 200 in statuses(), timeout_s=10, what="the delivery recorded")
        assert statuses() == [503, 503, 200]
    finally:
        receiver.server.shutdown()


def test_order_async_switch_sends_sync_modes_through_the_queue(api, dbs, user):
    """同步变异步: with `order_async` on, a 2pc order is accepted (202) and settles later."""
    assert (
        api.http.put(
            api.base_url + "/admin/switches/order_async",
            json={"on": True},
            headers=ADMIN,
            timeout=10,
        ).status_code
        == 200
    )
    try:

        def placed_async() -> Any:
            response = api.order(
                {"user_id": user, "items": [{"sku": SKU, "qty": 1}], "mode": "2pc"}
            )
            assert response.status_code in (201, 202), response.text
            return response if response.status_code == 202 else None

        response = wait_until(
            placed_async, timeout_s=10, interval_s=0.2, what="the switch to reach the gateway"
        )
    finally:  # back to the level's preset, not a manual "off"
        api.http.delete(api.base_url + "/admin/switches/order_async", headers=ADMIN, timeout=10)
    order = response.json()
    assert (order["mode"], order["status"]) == ("2pc", "pending")
    assert api.settled(order["order_id"])["status"] == "confirmed"
    row = dbs["order"].fetch_one(
        "SELECT txn_mode FROM orders WHERE order_id = :o", o=order["order_id"]
    )
    assert row == {"txn_mode": "msg"}


def test_killed_workers_are_restarted_and_lose_no_order(api, stack, user):
    """SIGKILL every worker process while msg orders flow: each comes back (supervised)
    and every order settles; nothing is applied twice or left half done."""
    bodies = [
        {
            "user_id": user,
            "items": [{"sku": "SKU-0061", "qty": 1}],
            "mode": "msg",
            "red_packet_cents": 10,
        }
        for _ in range(12)
    ]
    accepted = []
    workers = [name for name in stack.names if name.endswith("-worker")]
    for n, body in enumerate(bodies):
        response = api.order(body)
        assert response.status_code == 202, response.text
        accepted.append(response.json()["order_id"])
        if n < len(workers):
            stack.kill(workers[n])
    for name in workers:
        wait_until(partial(stack.is_running, name), 60, what=f"{name} restarted")
    statuses = {api.settled(order_id, timeout_s=90)["status"] for order_id in accepted}
    assert statuses == {"confirmed"}
    assert api.wallet(user)["balance_cents"] == 100000 - 10 * len(bodies)
