"""A participant's XA branch against real Postgres: votes, idempotent phase 2, tombstones."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from paxkit.db import Database
from paxkit.errors import InvalidInput
from paxkit.faults import Faults
from paxkit.xa import BranchConflict, XaBranch
from services.inventory.app import SPEC

SKU = "SKU-0042"
_ids = itertools.count(1)


@pytest.fixture(scope="module")
def scratch_inventory(scratch_db) -> Database:
    """An inventory database of this module's own, so its branches touch no shared ledger."""
    return scratch_db("inventory")


@pytest.fixture
def branch(scratch_inventory: Database) -> XaBranch:
    return XaBranch(
        "inventory",
        scratch_inventory,
        SPEC.xa_action,
        Faults("inventory", None),
        lock_timeout_ms=500,
    )


@pytest.fixture
def dbs(scratch_inventory: Database) -> dict[str, Database]:
    return {"inventory": scratch_inventory}


def new_gtid() -> str:
    return f"it-xa-{next(_ids)}-{id(object())}"


def payload(gtid: str, qty: int = 2, sku: str = SKU) -> dict[str, Any]:
    return {"order_id": f"o-{gtid}", "gtid": gtid, "items": [{"sku": sku, "qty": qty}]}


def stock(db: Database, sku: str = SKU) -> dict[str, Any]:
    row = db.fetch_one("SELECT available, frozen, sold FROM products WHERE sku = :sku", sku=sku)
    assert row is not None
    return row


def prepared_gids(db: Database) -> set[str]:
    return {r["gid"] for r in db.fetch_all("SELECT gid FROM pg_prepared_xacts")}


def test_yes_vote_leaves_a_prepared_transaction_and_commit_applies_it(branch, dbs):
    db, gtid = dbs["inventory"], new_gtid()
    before = stock(db)
    assert branch.prepare(gtid, payload(gtid)).yes
    assert branch.gid(gtid) in prepared_gids(db)
    assert stock(db) == before, "a prepared branch is invisible until committed"
    assert branch.commit(gtid) == "committed"
    assert stock(db)["sold"] == before["sold"] + 2
    assert stock(db)["available"] == before["available"] - 2
    assert branch.gid(gtid) not in prepared_gids(db)


def test_commit_is_idempotent_and_rollback_after_commit_is_refused(branch, dbs):
    gtid = new_gtid()
    branch.prepare(gtid, payload(gtid))
    branch.commit(gtid)
    sold = stock(dbs["inventory"])["sold"]
    assert branch.commit(gtid) == "already_committed"
    with pytest.raises(BranchConflict):
        branch.rollback(gtid)
    assert stock(dbs["inventory"])["sold"] == sold


def test_rollback_undoes_a_prepared_branch(branch, dbs):
    db, gtid = dbs["inventory"], new_gtid()
    before = stock(db)
    branch.prepare(gtid, payload(gtid))
    assert branch.rollback(gtid) == "rolled_back"
    assert stock(db) == before
    assert branch.gid(gtid) not in prepared_gids(db)
    with pytest.raises(BranchConflict):
        branch.commit(gtid)


def test_business_rule_votes_no_and_prepares_nothing(branch, dbs):
    db = dbs["inventory"]
    short, unknown = new_gtid(), new_gtid()
    before = stock(db)
    assert branch.prepare(short, payload(short, qty=10_000)).reason == "out_of_stock"
    assert branch.prepare(unknown, payload(unknown, sku="SKU-NOPE")).reason == "unknown_sku"
    assert stock(db) == before
    assert not {branch.gid(short), branch.gid(unknown)} & prepared_gids(db)


def test_late_prepare_after_rollback_votes_no(branch, dbs):
    db, gtid = dbs["inventory"], new_gtid()
    before = stock(db)
    assert branch.rollback(gtid) == "rolled_back"  # rollback overtakes prepare
    vote = branch.prepare(gtid, payload(gtid))
    assert (vote.yes, vote.reason) == (False, "aborted")
    assert branch.gid(gtid) not in prepared_gids(db)
    assert stock(db) == before


def test_duplicate_prepare_repeats_the_vote_without_a_second_effect(branch, dbs):
    db, gtid = dbs["inventory"], new_gtid()
    before = stock(db)
    assert branch.prepare(gtid, payload(gtid)).yes
    assert branch.prepare(gtid, payload(gtid)).yes, "retried while prepared"
    branch.commit(gtid)
    assert branch.prepare(gtid, payload(gtid)).yes, "retried after commit"
    assert stock(db)["sold"] == before["sold"] + 2
    assert branch.gid(gtid) not in prepared_gids(db)


def test_prepared_lists_this_branchs_transactions(branch, dbs):
    gtid = new_gtid()
    branch.prepare(gtid, payload(gtid))
    try:
        listed = {p["gtid"]: p for p in branch.prepared()}
        assert gtid in listed
        assert listed[gtid]["age_s"] >= 0
    finally:
        branch.rollback(gtid)
    assert gtid not in {p["gtid"] for p in branch.prepared()}


@pytest.mark.parametrize(
    "items",
    [
        [{"sku": SKU, "qty": {"not": "a number"}}],  # the driver cannot send it
        [{"sku": SKU, "qty": "two"}],  # the server refuses it: not an integer
    ],
    ids=["unsendable", "not-an-integer"],
)
def test_a_payload_value_only_the_database_refuses_is_the_callers_error(branch, dbs, items):
    """Found by the schema fuzzer: such a value reached SQL and answered 500."""
    gtid, before = new_gtid(), stock(dbs["inventory"])
    with pytest.raises(InvalidInput) as refused:
        branch.prepare(gtid, {**payload(gtid), "items": items})
    assert refused.value.extra == {"field": "payload"}
    assert branch.gid(gtid) not in prepared_gids(dbs["inventory"])
    assert stock(dbs["inventory"]) == before
