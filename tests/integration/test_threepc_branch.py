"""A participant's 3PC branch against real Postgres: votes, PreCommit as a real prepared
transaction, idempotent retries, both of the participant's own timeouts, a late PreCommit
refused, a PreCommit in flight racing the timeout loop; and the mode refused where it is off.

The branch runs on a scratch copy of the inventory database, so stock can be asserted
exactly; the timeouts are short so each can be waited for (by polling, with a deadline).
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
from typing import Any

import pytest
import redis

from coordinator.app import create_app as coordinator_app
from paxkit.auth import SERVICE_HEADER
from paxkit.config import Settings
from paxkit.db import Database
from paxkit.faults import Faults, arm
from paxkit.threepc import OPS, ThreePhaseBranch, Timeouts
from paxkit.xa import BranchConflict, Vote, XaBranch
from services.inventory.app import SPEC
from services.inventory.app import create_app as inventory_app
from services.order.app import create_app as order_app
from tests.conftest import TEST_ENV
from tests.helpers import wait_until

SKU = "SKU-0043"
SERVICE = {SERVICE_HEADER: TEST_ENV["PAXMART_SERVICE_TOKEN"]}
LONG = Timeouts(uncertain_s=60, precommit_s=60)
_ids = itertools.count(1)


@pytest.fixture(scope="module")
def db(scratch_db) -> Database:
    return scratch_db("inventory")


def make_branch(db: Database, timeouts: Timeouts = LONG, faults: Faults | None = None):
    xa = XaBranch("inventory", db, SPEC.xa_action, faults or Faults("inventory", None), 500)
    return ThreePhaseBranch(xa, timeouts)


@pytest.fixture
def branch(db: Database) -> ThreePhaseBranch:
    return make_branch(db)


def new_gtid() -> str:
    return f"it-3pc-{next(_ids)}"


def part(gtid: str, qty: int = 2) -> dict[str, Any]:
    return {"order_id": f"o-{gtid}", "items": [{"sku": SKU, "qty": qty}]}


def stock(db: Database) -> dict[str, Any]:
    row = db.fetch_one("SELECT available, frozen, sold FROM products WHERE sku = :s", s=SKU)
    assert row is not None
    return row


def sold(before: dict[str, Any], qty: int) -> dict[str, Any]:
    return {**before, "available": before["available"] - qty, "sold": before["sold"] + qty}


def row_of(db: Database, branch: ThreePhaseBranch, gtid: str) -> dict[str, Any] | None:
    return db.fetch_one(
        "SELECT state, by_timeout FROM threepc_branches WHERE gid = :g", g=branch.gid(gtid)
    )


def prepared(db: Database, branch: ThreePhaseBranch, gtid: str) -> bool:
    found = db.fetch_one("SELECT 1 AS n FROM pg_prepared_xacts WHERE gid = :g", g=branch.gid(gtid))
    return found is not None


def deadline_passed(db: Database, branch: ThreePhaseBranch, gtid: str) -> bool:
    row = db.fetch_one(
        "SELECT deadline < now() AS passed FROM threepc_branches WHERE gid = :g",
        g=branch.gid(gtid),
    )
    return bool(row and row["passed"])


def vote(v: Vote) -> tuple[bool, str | None]:
    return v.yes, v.reason


def decided_on_its_own(db: Database, branch: ThreePhaseBranch, gtid: str, state: str) -> None:
    """Run the timeout loop's passes until this branch decided `state` by its timeout."""

    def decided() -> bool:
        branch.run_timeouts()
        return row_of(db, branch, gtid) == {"state": state, "by_timeout": True}

    wait_until(decided, timeout_s=10, what=f"{gtid} to be {state} by its timeout")


def test_cancommit_holds_nothing_precommit_prepares_docommit_applies(branch, db):
    gtid, before = new_gtid(), stock(db)
    voted = branch.can_commit(gtid, part(gtid))
    assert (voted.ok, voted.effect) == (True, "uncertain")
    assert row_of(db, branch, gtid) == {"state": "uncertain", "by_timeout": False}
    assert stock(db) == before and not prepared(db, branch, gtid), "CanCommit holds nothing"

    assert vote(branch.prepare(gtid, part(gtid))) == (True, None)
    assert prepared(db, branch, gtid)
    assert stock(db) == before, "a precommitted branch is invisible until committed"
    assert row_of(db, branch, gtid) == {"state": "uncertain", "by_timeout": False}

    assert branch.commit(gtid) == "committed"
    assert stock(db) == sold(before, 2)
    assert row_of(db, branch, gtid) == {"state": "committed", "by_timeout": False}
    assert not prepared(db, branch, gtid)


def test_every_step_retried_answers_again_with_one_effect(branch, db):
    gtid, before = new_gtid(), stock(db)
    assert branch.can_commit(gtid, part(gtid)).ok
    assert branch.can_commit(gtid, part(gtid)).effect == "duplicate"
    assert branch.prepare(gtid, part(gtid)).yes
    assert branch.can_commit(gtid, part(gtid)).ok, "retried while precommitted"
    assert branch.prepare(gtid, part(gtid)).yes, "retried while precommitted"
    assert branch.commit(gtid) == "committed"
    assert branch.commit(gtid) == "already_committed"
    assert branch.prepare(gtid, part(gtid)).yes, "retried after DoCommit"
    # An Abort after that cannot undo it: it answers what the branch did (a split).
    assert branch.abort(gtid) == "committed"
    assert stock(db) == sold(before, 2)


def test_a_business_rule_votes_no_at_cancommit_and_records_nothing(branch, db):
    gtid, before = new_gtid(), stock(db)
    refused = branch.can_commit(gtid, part(gtid, qty=before["available"] + 1))
    assert (refused.ok, refused.reason) == (False, "out_of_stock")
    assert row_of(db, branch, gtid) is None
    assert vote(branch.prepare(gtid, part(gtid))) == (False, "aborted"), "no CanCommit, no ack"
    assert stock(db) == before and not prepared(db, branch, gtid)


def test_abort_rolls_a_precommitted_branch_back_and_blocks_late_calls(branch, db):
    gtid, before = new_gtid(), stock(db)
    branch.can_commit(gtid, part(gtid))
    branch.prepare(gtid, part(gtid))
    assert branch.abort(gtid) == "rolled_back"
    assert branch.abort(gtid) == "rolled_back", "idempotent"
    assert stock(db) == before and not prepared(db, branch, gtid)
    assert row_of(db, branch, gtid) == {"state": "aborted", "by_timeout": False}
    assert vote(branch.prepare(gtid, part(gtid))) == (False, "aborted")
    with pytest.raises(BranchConflict):
        branch.commit(gtid)


def test_an_abort_overtaking_its_cancommit_leaves_a_tombstone_the_late_vote_meets(branch, db):
    gtid, before = new_gtid(), stock(db)
    assert branch.abort(gtid) == "rolled_back"
    late = branch.can_commit(gtid, part(gtid))
    assert (late.ok, late.effect, late.reason) == (False, "refused", "aborted")
    assert stock(db) == before


def test_an_uncertain_branch_aborts_on_its_own_and_refuses_its_late_precommit(db):
    branch = make_branch(db, Timeouts(uncertain_s=0.3, precommit_s=60))
    gtid, before = new_gtid(), stock(db)
    assert branch.can_commit(gtid, part(gtid)).ok
    decided_on_its_own(db, branch, gtid, "aborted")
    assert vote(branch.prepare(gtid, part(gtid))) == (False, "timeout")
    assert branch.can_commit(gtid, part(gtid)).reason == "timeout"
    assert branch.abort(gtid) == "rolled_back"
    assert stock(db) == before and not prepared(db, branch, gtid)


def test_a_precommit_after_the_deadline_is_refused_even_before_the_loop_ran(db):
    branch = make_branch(db, Timeouts(uncertain_s=0.3, precommit_s=60))
    gtid, before = new_gtid(), stock(db)
    branch.can_commit(gtid, part(gtid))
    wait_until(lambda: deadline_passed(db, branch, gtid), timeout_s=10, what="the deadline")
    assert vote(branch.prepare(gtid, part(gtid))) == (False, "timeout")
    assert row_of(db, branch, gtid) == {"state": "uncertain", "by_timeout": False}
    assert stock(db) == before and not prepared(db, branch, gtid)


def test_a_precommitted_branch_that_hears_nothing_commits_on_its_own(db):
    branch = make_branch(db, Timeouts(uncertain_s=60, precommit_s=0.3))
    gtid, before = new_gtid(), stock(db)
    branch.can_commit(gtid, part(gtid))
    branch.prepare(gtid, part(gtid))
    decided_on_its_own(db, branch, gtid, "committed")
    assert stock(db) == sold(before, 2)
    assert not prepared(db, branch, gtid)
    # What the coordinator hears afterwards: a DoCommit is done already; an Abort comes too
    # late, and says what the branch did (the split the audit reports).
    assert branch.commit(gtid) == "already_committed"
    assert branch.abort(gtid) == "committed_by_timeout"
    assert stock(db) == sold(before, 2)
    assert branch.states([gtid])[gtid].as_json() == {"state": "committed", "by_timeout": True}


def test_the_timeout_loop_skips_a_precommit_in_flight(db, redis_client: redis.Redis):
    """The PreCommit claimed the row before the deadline and is stalled, holding it, while
    the deadline passes: the loop leaves it, and the PreCommit prepares."""
    faults = Faults("inventory-it-3pc", redis_client)
    branch = make_branch(db, Timeouts(uncertain_s=1.0, precommit_s=60), faults)
    gtid, before = new_gtid(), stock(db)
    branch.can_commit(gtid, part(gtid))
    arm(redis_client, "inventory-it-3pc", "before_precommit", "stall", seconds=2.5)
    votes: list[Vote] = []
    precommit = threading.Thread(target=lambda: votes.append(branch.prepare(gtid, part(gtid))))
    precommit.start()
    try:
        wait_until(lambda: deadline_passed(db, branch, gtid), timeout_s=10, what="the deadline")
        assert precommit.is_alive(), "the PreCommit is still in flight"
        branch.expire_uncertain()
        assert precommit.is_alive(), "the loop did not wait for the PreCommit's row"
    finally:
        precommit.join(10)
    assert [vote(v) for v in votes] == [(True, None)]
    assert prepared(db, branch, gtid)
    branch.run_timeouts()  # a prepared branch is no longer uncertain, and not overdue
    assert branch.commit(gtid) == "committed"
    assert stock(db) == sold(before, 2)
    assert row_of(db, branch, gtid) == {"state": "committed", "by_timeout": False}


def test_the_timeouts_leave_a_branch_whose_coordinator_finished_it(db):
    branch = make_branch(db, Timeouts(uncertain_s=0.3, precommit_s=0.3))
    done, aborted = new_gtid(), new_gtid()
    for gtid in (done, aborted):
        branch.can_commit(gtid, part(gtid, qty=1))
        branch.prepare(gtid, part(gtid, qty=1))
    branch.commit(done)
    branch.abort(aborted)
    wait_until(lambda: deadline_passed(db, branch, aborted), timeout_s=10, what="the deadlines")
    branch.run_timeouts()
    assert row_of(db, branch, done) == {"state": "committed", "by_timeout": False}
    assert row_of(db, branch, aborted) == {"state": "aborted", "by_timeout": False}


@pytest.fixture(scope="module")
def mode_off(fresh_databases: Settings) -> Settings:
    return dataclasses.replace(fresh_databases, threepc_mode=False)


def test_where_the_mode_is_off_it_is_refused_at_the_order_service_and_the_coordinator(
    mode_off, dbs
):
    def orders() -> Any:
        return dbs["order"].fetch_one("SELECT count(*) AS n FROM orders")

    before = orders()
    order = {"user_id": 5, "items": [{"sku": SKU, "qty": 1}], "mode": "3pc"}
    txn = {
        "gtid": "it-3pc-off",
        "mode": "3pc",
        "branches": [{"name": "inventory", "payload": part("it-3pc-off")}],
    }
    for app, path, body in (
        (order_app(mode_off), "/orders", order),
        (coordinator_app(mode_off), "/transactions", txn),
    ):
        reply = app.test_client().post(path, json=body, headers=SERVICE)
        assert reply.status_code == 400, reply.get_data(as_text=True)
        error = reply.get_json()["error"]
        assert (error["code"], error["field"]) == ("unsupported_mode", "mode")
        assert "PAXMART_3PC_MODE=1" in error["message"]
    assert orders() == before
    assert dbs["coordinator"].fetch_all("SELECT 1 FROM global_txns WHERE gtid = 'it-3pc-off'") == []


def test_a_participant_serves_the_3pc_routes_only_where_the_mode_is_on(mode_off):
    def routes(settings: Settings) -> set[str]:
        return {rule.rule for rule in inventory_app(settings).url_map.iter_rules()}

    steps = {f"/3pc/{op}" for op in OPS}
    assert not steps & routes(mode_off)
    assert steps <= routes(dataclasses.replace(mode_off, threepc_mode=True))
    assert "/audit/3pc" in routes(mode_off), "the audit reads its rows either way"
