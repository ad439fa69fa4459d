"""Mode paxos through the whole stack: the decision is chosen by the acceptors, one acceptor
down changes nothing, a majority down decides nothing (and nothing is half-applied once
they are back), and a second coordinator instance finishes what a dead one began, with or
without the first one's log entry."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from paxkit.config import Settings
from paxkit.db import Database
from paxkit.faults import arm
from paxkit.migrate import refusing_connections
from tests.e2e.conftest import ADMIN, prepared_for
from tests.e2e.test_faults import (
    Background,
    assert_applied_once,
    order_body,
    pending_order,
    snapshot,
    txn_status,
)
from tests.helpers import wait_until


@contextlib.contextmanager
def unavailable(settings: Settings, *acceptors: str) -> Iterator[None]:
    """These acceptors' databases refuse every connection, as if down, until the block ends."""
    with contextlib.ExitStack() as outages:
        for acceptor in acceptors:
            outages.enter_context(refusing_connections(settings.db_urls[acceptor]))
        yield


def votes(acceptor_dbs: dict[str, Database], gtid: str) -> dict[str, tuple[int, str]]:
    """What each acceptor accepted for the transaction: (round, value)."""
    found = {}
    for name, db in acceptor_dbs.items():
        row = db.fetch_one(
            "SELECT accepted_round, accepted_value FROM paxos_instances "
            "WHERE instance = :g AND accepted_value IS NOT NULL",
            g=gtid,
        )
        if row is not None:
            found[name] = (row["accepted_round"], row["accepted_value"])
    return found


def chosen(acceptor_dbs: dict[str, Database], gtid: str) -> str | None:
    """The value a majority of acceptors accepted (mode paxos uses one ballot per value)."""
    values = [value for _, value in votes(acceptor_dbs, gtid).values()]
    for value in set(values):
        if values.count(value) > len(acceptor_dbs) // 2:
            return value
    return None


def timeline(api, gtid: str) -> set[tuple[str, str, str]]:
    txn = api.get(f"/admin/transactions/{gtid}", headers=ADMIN).json()
    return {(e["branch"], e["op"], e["outcome"]) for e in txn["timeline"]}


def assert_all_or_nothing(api, dbs, user: int, before: dict[str, Any], order_id: str) -> str:
    settled = api.settled(order_id, timeout_s=60)
    wait_until(lambda: prepared_for(dbs, settled["gtid"]) == 0, what="no prepared branch left")
    if settled["status"] == "confirmed":
        assert_applied_once(api, user, before)
    else:
        assert snapshot(api, user) == before
    return str(settled["status"])


def test_the_decision_is_chosen_by_the_acceptors_and_shown_in_the_timeline(api, acceptor_dbs, user):
    before = snapshot(api, user)
    response = api.order(order_body(user, "paxos"))
    assert response.status_code == 201, response.text
    order = response.json()
    assert_applied_once(api, user, before)
    assert chosen(acceptor_dbs, order["gtid"]) == "commit"
    assert {r for r, _ in votes(acceptor_dbs, order["gtid"]).values()} == {0}  # ballot 0
    seen = timeline(api, order["gtid"])
    assert ("paxos", "chosen", "ok") in seen
    assert len({a for a, op, outcome in seen if (op, outcome) == ("accept", "ok")}) >= 2


def test_one_acceptor_database_down_orders_still_commit(api, fresh_databases, acceptor_dbs, user):
    before = snapshot(api, user)
    with unavailable(fresh_databases, "acceptor2"):
        response = api.order(order_body(user, "paxos"))
    assert response.status_code == 201, response.text
    gtid = response.json()["gtid"]
    assert_applied_once(api, user, before)
    assert "acceptor2" not in votes(acceptor_dbs, gtid)
    assert chosen(acceptor_dbs, gtid) == "commit"


def test_a_majority_down_decides_nothing_and_nothing_is_half_applied_once_back(
    api, fresh_databases, dbs, acceptor_dbs, user
):
    before = snapshot(api, user)
    with unavailable(fresh_databases, "acceptor1", "acceptor3"):
        response = api.order(order_body(user, "paxos"))
        assert response.status_code == 504, response.text  # no decision: outcome unknown
        order = response.json()
        assert txn_status(dbs, order["gtid"]) == "preparing"
        assert prepared_for(dbs, order["gtid"]) == 0  # never registered: nothing prepared
        assert snapshot(api, user) == before
    settled = api.settled(order["order_id"], timeout_s=60)
    assert (settled["status"], settled["reason"]) == ("failed", "timeout")
    wait_until(lambda: txn_status(dbs, order["gtid"]) == "aborted", what="log says aborted")
    assert chosen(acceptor_dbs, order["gtid"]) == "abort"
    assert snapshot(api, user) == before


def test_ballot_zero_that_reached_one_acceptor_ends_all_or_nothing(
    api, dbs, redis_client, acceptor_dbs, user
):
    """Its Accept to two acceptors is lost: undecided. A takeover that hears of acceptor1's
    commit must commit; one that does not aborts. Either way, all or nothing."""
    before = snapshot(api, user)
    for acceptor in ("acceptor2", "acceptor3"):
        arm(redis_client, "coordinator", f"paxos_accept_{acceptor}", "fail")
    response = api.order(order_body(user, "paxos"))
    assert response.status_code == 504, response.text
    order = response.json()
    assert votes(acceptor_dbs, order["gtid"]) == {"acceptor1": (0, "commit")}
    status = assert_all_or_nothing(api, dbs, user, before, order["order_id"])
    final = "committed" if status == "confirmed" else "aborted"
    wait_until(lambda: txn_status(dbs, order["gtid"]) == final, what=f"log says {final}")
    assert chosen(acceptor_dbs, order["gtid"]) == ("commit" if final == "committed" else "abort")


@pytest.mark.parametrize("log_entry", ["kept", "lost"])
def test_a_second_coordinator_instance_finishes_what_a_dead_one_began(
    api, stack, dbs, redis_client, acceptor_dbs, user, log_entry
):
    """Commit is chosen at the acceptors, and the coordinator (web and worker) dies before
    its log hears of it. A second coordinator worker takes the transaction over with a
    higher ballot, adopts the commit and finishes it; with the log entry lost too, its sweep
    over the acceptors finds the transaction and gives it back to the log first."""
    before = snapshot(api, user)
    arm(redis_client, "coordinator", "paxos_chosen", "stall", seconds=60)
    placing = Background(api, order_body(user, "paxos"))
    order = pending_order(dbs, user)
    gtid = order["gtid"]
    wait_until(lambda: chosen(acceptor_dbs, gtid) == "commit", what="commit chosen")
    second = None
    try:
        stack.kill("coordinator", restart=False)
        stack.kill("coordinator-worker", restart=False)
        placing.join()
        assert placing.response is not None and placing.response.status_code == 504
        assert txn_status(dbs, gtid) == "preparing", "the log never heard of the decision"
        if log_entry == "lost":
            with dbs["coordinator"].transaction() as conn:
                conn.exec_driver_sql("DELETE FROM global_txns WHERE gtid = %(g)s", {"g": gtid})
        second = stack.add_worker("coordinator")
        wait_until(
            lambda: txn_status(dbs, gtid) == "committed",
            timeout_s=30,
            what="the second coordinator to commit",
        )
        assert gtid in stack.log_file(second).read_text()
        assert prepared_for(dbs, gtid) == 0
        assert_applied_once(api, user, before)
    finally:
        if second is not None:
            stack.kill(second, restart=False)
        stack.restart("coordinator-worker")
        stack.restart("coordinator")
    assert api.settled(order["order_id"], timeout_s=60)["status"] == "confirmed"
    assert_applied_once(api, user, before)
