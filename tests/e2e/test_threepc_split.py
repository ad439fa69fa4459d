"""Why mode 3pc is off by default, end to end: a partition between the coordinator and one
participant right after that participant's PreCommit splits the outcome, and the audit
says so; the same cut healed before the participant's own timeout splits nothing.

The cut is two fault points of the red-packet service: `after_precommit` stalls its ack
past the branch timeout (the coordinator, missing it, aborts every branch), and
`before_abort` fails the Abort that follows (as if it could not get through) until the
test heals it. The stack is one of this module's own (own ports, databases, Redis db,
broker namespace, short 3PC timeouts): the split it leaves behind on purpose must not
reach the suite's databases, whose audit the last module requires clean.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from paxkit.config import Settings
from paxkit.db import Database, make_engine
from paxkit.faults import arm, disarm_all
from tests.conftest import SLOT, TEST_ENV
from tests.e2e.conftest import ADMIN, Api, own_stack, stack_ports
from tests.helpers import wait_until

PREFIX = f"paxmart_test{SLOT or ''}_threepc_"
PORT_OFFSET = 30
PRECOMMIT_TIMEOUT_S = 5
SKU = "SKU-0062"
BRANCHES = ("inventory", "coupon", "redpacket")


@dataclass
class SplitStack:
    api: Api
    redis: redis.Redis
    dbs: dict[str, Database]


def split_env() -> dict[str, str]:
    return {
        **TEST_ENV,
        **stack_ports(PORT_OFFSET),
        "PAXMART_DB_PREFIX": PREFIX,
        "PAXMART_REDIS_URL": f"redis://127.0.0.1:6379/{13 - SLOT}",
        "PAXMART_3PC_MODE": "1",
        "PAXMART_3PC_UNCERTAIN_TIMEOUT_S": "4",
        "PAXMART_3PC_PRECOMMIT_TIMEOUT_S": str(PRECOMMIT_TIMEOUT_S),
    }


@pytest.fixture(scope="module")
def split(fresh_databases: Settings) -> Iterator[SplitStack]:
    log_dir = fresh_databases.state_dir / "test-logs-threepc"
    with own_stack(split_env(), log_dir) as (stack, settings):
        names = ("coordinator", *BRANCHES)
        dbs = {n: Database(make_engine(settings.db_urls[n], pool_size=1)) for n in names}
        faults = redis.Redis.from_url(settings.redis_url, socket_timeout=2)
        try:
            yield SplitStack(Api(stack.url("gateway")), faults, dbs)
        finally:
            disarm_all(faults)
            for db in dbs.values():
                db.dispose()


def threepc_order(user: int) -> dict[str, Any]:
    return {
        "user_id": user,
        "items": [{"sku": SKU, "qty": 3}],
        "coupon_id": f"C-{user}-1",
        "red_packet_cents": 250,
        "mode": "3pc",
    }


def balances(api: Api, user: int) -> dict[str, Any]:
    return {
        "stock": api.product(SKU)["stock"],
        "coupon": api.coupon_status(user, f"C-{user}-1"),
        **{k: v for k, v in api.wallet(user).items() if k.endswith("_cents")},
    }


def branch_row(split: SplitStack, name: str, gtid: str) -> dict[str, Any] | None:
    return split.dbs[name].fetch_one(
        "SELECT state, by_timeout FROM threepc_branches WHERE gtid = :g", g=gtid
    )


def txn_status(split: SplitStack, gtid: str) -> str | None:
    row = split.dbs["coordinator"].fetch_one(
        "SELECT status FROM global_txns WHERE gtid = :g", g=gtid
    )
    return row["status"] if row else None


def cut_redpacket_off_after_its_precommit(split: SplitStack, abort_gets_through: bool) -> None:
    arm(split.redis, "redpacket", "after_precommit", "stall", seconds=3)  # > branch timeout
    if not abort_gets_through:
        arm(split.redis, "redpacket", "before_abort", "fail", times=10_000)


def place_failed_for_a_missing_ack(split: SplitStack, user: int) -> dict[str, Any]:
    reply = split.api.order(threepc_order(user))
    assert reply.status_code == 409, reply.text
    order = reply.json()
    assert (order["status"], order["reason"]) == ("failed", "timeout")
    return dict(order)


def audit_of(split: SplitStack, order: dict[str, Any]) -> list[dict[str, Any]]:
    def ours(v: dict[str, Any]) -> bool:
        return v.get("gtid") == order["gtid"] or v.get("order_id") == order["order_id"]

    return [v for v in split.api.audit()["violations"] if ours(v)]


def test_a_branch_cut_off_after_its_precommit_commits_while_the_others_abort(split):
    user, api = 301, split.api
    before = balances(api, user)
    cut_redpacket_off_after_its_precommit(split, abort_gets_through=False)
    order = place_failed_for_a_missing_ack(split, user)
    gtid = order["gtid"]
    for name in ("inventory", "coupon"):  # the Abort reached them at once
        assert branch_row(split, name, gtid) == {"state": "aborted", "by_timeout": False}

    # Cut off and precommitted, the red-packet branch hears no Abort: its own timeout
    # commits it.
    wait_until(
        lambda: branch_row(split, "redpacket", gtid) == {"state": "committed", "by_timeout": True},
        timeout_s=PRECOMMIT_TIMEOUT_S + 20,
        what="the red-packet branch to commit by its precommit timeout",
    )
    assert balances(api, user) == {
        **before,
        "balance_cents": before["balance_cents"] - 250,
    }, "the failed order's red packet is spent; its stock and coupon are back"

    disarm_all(split.redis)  # healed: recovery's next Abort hears what the branch did
    wait_until(
        lambda: txn_status(split, gtid) == "aborted",
        timeout_s=60,
        what="recovery to finish the abort",
    )
    detail = api.get(f"/admin/transactions/{gtid}", headers=ADMIN).json()
    assert ("redpacket", "abort", "ok", "committed_by_timeout") in {
        (e["branch"], e["op"], e["outcome"], e["detail"]) for e in detail["timeline"]
    }

    found = audit_of(split, order)
    assert {
        "check": "threepc_split",
        "gtid": gtid,
        "status": "aborted",
        "committed": ["redpacket"],
        "aborted": ["coupon", "inventory"],
        "by_timeout": ["redpacket"],
    } in found
    assert {(v["check"], v.get("effect")) for v in found} == {
        ("threepc_split", None),
        ("failed_order_with_effects", "redpacket"),
    }


def test_the_same_cut_healed_before_the_branchs_timeout_splits_nothing(split):
    user, api = 302, split.api
    before = balances(api, user)
    cut_redpacket_off_after_its_precommit(split, abort_gets_through=True)
    order = place_failed_for_a_missing_ack(split, user)
    for name in BRANCHES:
        assert branch_row(split, name, order["gtid"]) == {"state": "aborted", "by_timeout": False}
    assert txn_status(split, order["gtid"]) == "aborted"
    assert balances(api, user) == before
    assert audit_of(split, order) == []
