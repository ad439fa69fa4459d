"""The barrier against real Postgres: duplicates, null compensation, hanging, for TCC and saga.

The red-packet service's TCC trio and saga step run through the shared barrier on a
scratch copy of its database, so balances can be asserted exactly.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from paxkit.barrier import BarrierBranch
from paxkit.db import Database
from paxkit.faults import Faults
from services.redpacket.app import SPEC

USER = 5
_ids = itertools.count(1)


@pytest.fixture(scope="module")
def wallets(scratch_db) -> Database:
    return scratch_db("redpacket")


@pytest.fixture
def branch(wallets: Database) -> BarrierBranch:
    return BarrierBranch(
        "redpacket", wallets, Faults("redpacket", None), 500, tcc=SPEC.tcc, saga=SPEC.saga
    )


def payload(gtid: str, amount: int = 300) -> dict[str, Any]:
    return {"order_id": f"o-{gtid}", "user_id": USER, "amount_cents": amount}


def new_gtid() -> str:
    return f"it-barrier-{next(_ids)}"


def wallet(db: Database) -> dict[str, Any]:
    row = db.fetch_one(
        "SELECT balance_cents, frozen_cents, spent_cents FROM wallets WHERE user_id = :u", u=USER
    )
    assert row is not None
    return row


def test_try_then_confirm_moves_money_from_balance_to_frozen_to_spent(branch, wallets):
    gtid, start = new_gtid(), wallet(wallets)
    assert branch.call("try", gtid, payload(gtid)).effect == "applied"
    assert wallet(wallets) == {
        **start,
        "balance_cents": start["balance_cents"] - 300,
        "frozen_cents": 300,
    }
    assert branch.call("confirm", gtid, payload(gtid)).effect == "applied"
    assert wallet(wallets) == {
        "balance_cents": start["balance_cents"] - 300,
        "frozen_cents": 0,
        "spent_cents": start["spent_cents"] + 300,
    }


def test_duplicate_try_confirm_and_cancel_have_one_effect_each(branch, wallets):
    confirmed, cancelled, start = new_gtid(), new_gtid(), wallet(wallets)
    assert [branch.call("try", confirmed, payload(confirmed)).effect for _ in range(3)] == [
        "applied",
        "duplicate",
        "duplicate",
    ]
    assert [branch.call("confirm", confirmed, payload(confirmed)).effect for _ in range(2)] == [
        "applied",
        "duplicate",
    ]
    assert [branch.call("try", cancelled, payload(cancelled)).effect for _ in range(2)] == [
        "applied",
        "duplicate",
    ]
    assert [branch.call("cancel", cancelled, payload(cancelled)).effect for _ in range(2)] == [
        "applied",
        "duplicate",
    ]
    assert wallet(wallets) == {
        "balance_cents": start["balance_cents"] - 300,
        "frozen_cents": 0,
        "spent_cents": start["spent_cents"] + 300,
    }


def test_cancel_before_try_is_a_null_compensation_and_blocks_the_late_try(branch, wallets):
    gtid, start = new_gtid(), wallet(wallets)
    cancel = branch.call("cancel", gtid, payload(gtid))
    assert (cancel.ok, cancel.effect) == (True, "null")
    late = branch.call("try", gtid, payload(gtid))
    assert (late.ok, late.effect, late.reason) == (False, "refused", "aborted")
    assert wallet(wallets) == start
    assert wallets.fetch_one("SELECT count(*) AS n FROM wallet_holds WHERE gtid = :g", g=gtid) == {
        "n": 0
    }


def test_rejected_try_leaves_nothing_and_its_cancel_is_null(branch, wallets):
    gtid, start = new_gtid(), wallet(wallets)
    too_much = payload(gtid, amount=start["balance_cents"] + 1)
    rejected = branch.call("try", gtid, too_much)
    assert (rejected.ok, rejected.reason) == (False, "insufficient_balance")
    assert branch.call("cancel", gtid, too_much).effect == "null"
    assert wallet(wallets) == start


def test_saga_compensation_undoes_its_action_once(branch, wallets):
    gtid, start = new_gtid(), wallet(wallets)
    assert branch.call("action", gtid, payload(gtid)).effect == "applied"
    assert wallet(wallets)["spent_cents"] == start["spent_cents"] + 300
    assert [branch.call("compensate", gtid, payload(gtid)).effect for _ in range(2)] == [
        "applied",
        "duplicate",
    ]
    assert wallet(wallets) == start


def test_saga_compensation_before_action_blocks_the_late_action(branch, wallets):
    gtid, start = new_gtid(), wallet(wallets)
    assert branch.call("compensate", gtid, payload(gtid)).effect == "null"
    assert branch.call("action", gtid, payload(gtid)).effect == "refused"
    assert wallet(wallets) == start
