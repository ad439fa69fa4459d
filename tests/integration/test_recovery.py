"""Coordinator recovery against real Postgres and real participant HTTP endpoints.

The three participant apps are served in-process on loopback; the coordinator's log,
driver and recovery are built directly so each crash point can be staged exactly. The
order is no branch: its row follows the outcome through the order service's reconciler,
which asks a coordinator app served in-process as well.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import text
from werkzeug.serving import make_server

from coordinator.app import create_app as coordinator_app
from coordinator.branches import Branches
from coordinator.drivers import DRIVERS
from coordinator.log import TxnLog
from coordinator.ports import Branch, Txn
from coordinator.recovery import Recovery
from paxkit.config import Settings
from paxkit.db import Database
from paxkit.faults import Faults
from paxkit.http import ServiceClient
from paxkit.lease import Leases, new_owner
from services.coupon.app import create_app as coupon_app
from services.inventory.app import create_app as inventory_app
from services.order.reconcile import PendingOrderReconciler
from services.order.repository import OrderRepository
from services.redpacket.app import create_app as redpacket_app

SKU = "SKU-0077"
USER = 977
_ids = itertools.count(1)


def serve(app: Any) -> Any:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def participants(fresh_databases: Settings) -> Iterator[Settings]:
    """Serve the three participants on free loopback ports; settings that point at them."""
    servers = {
        name: serve(factory(fresh_databases))
        for name, factory in (
            ("inventory", inventory_app),
            ("coupon", coupon_app),
            ("redpacket", redpacket_app),
        )
    }
    urls = {
        **fresh_databases.urls,
        **{n: f"http://127.0.0.1:{s.server_port}" for n, s in servers.items()},
    }
    yield dataclasses.replace(fresh_databases, urls=urls)
    for server in servers.values():
        server.shutdown()


@pytest.fixture(scope="module")
def reconciler(participants: Settings, dbs: dict[str, Database]) -> Iterator[Any]:
    """The order service's reconciler, asking a coordinator served in-process."""
    server = serve(coordinator_app(participants))
    client = ServiceClient(
        "coordinator",
        f"http://127.0.0.1:{server.server_port}",
        3.0,
        credential=participants.service_token,
    )
    yield PendingOrderReconciler(
        OrderRepository(dbs["order"]),
        client,
        horizon_s=0.0,
        resend_s=120.0,
        leases=Leases(dbs["order"], new_owner()),
    )
    server.shutdown()


@pytest.fixture(scope="module")
def parts(participants: Settings, dbs: dict[str, Database]) -> dict[str, Any]:
    txn_log = TxnLog(dbs["coordinator"])
    branches = Branches(participants)
    pool = ThreadPoolExecutor(max_workers=8)
    faults = Faults("coordinator", None)
    drivers = {
        d.mode: d(txn_log, branches, faults, pool, txn_timeout_s=4, retry_delay_s=0.2)
        for d in DRIVERS
    }
    recovery = Recovery(txn_log, branches, drivers, horizon_s=0.0, lease_s=4, base_delay_s=0.1)
    return {"log": txn_log, "branches": branches, "driver": drivers["2pc"], "recovery": recovery}


def staged_order(dbs: dict[str, Database]) -> dict[str, Any]:
    """A pending order and its branches, as the order service would hand them over."""
    n = next(_ids)
    order_id, gtid = f"ord-it-rec-{n}", f"gtx-it-rec-{n}"
    OrderRepository(dbs["order"]).insert(
        {
            "order_id": order_id,
            "gtid": gtid,
            "user_id": USER,
            "mode": "2pc",
            "txn_mode": "2pc",
            "status": "pending",
            "reason": None,
            "items": [{"sku": SKU, "qty": 3, "price_cents": 7700}],
            "coupon_id": None,
            "total_cents": 23100,
            "discount_cents": 0,
            "red_packet_cents": 100,
            "payable_cents": 23000,
            "notify_url": None,
        }
    )
    common = {"order_id": order_id, "gtid": gtid}
    branches = [
        Branch("inventory", {**common, "items": [{"sku": SKU, "qty": 3}]}),
        Branch("redpacket", {**common, "user_id": USER, "amount_cents": 100}),
    ]
    return {"order_id": order_id, "gtid": gtid, "mode": "2pc", "branches": branches}


def prepare_all(parts: dict[str, Any], txn: dict[str, Any]) -> None:
    for branch in txn["branches"]:
        assert parts["branches"].call("2pc", "prepare", branch.name, txn["gtid"], branch.payload).ok


def status_of(parts: dict[str, Any], gtid: str) -> str:
    txn: Txn = parts["log"].get(gtid)
    return txn.status


def snapshot(dbs: dict[str, Database]) -> dict[str, Any]:
    return {
        "stock": dbs["inventory"].fetch_one(
            "SELECT available, sold FROM products WHERE sku = :s", s=SKU
        ),
        "wallet": dbs["redpacket"].fetch_one(
            "SELECT balance_cents, spent_cents FROM wallets WHERE user_id = :u", u=USER
        ),
    }


def order_status(dbs: dict[str, Database], order_id: str) -> tuple[str, str | None]:
    row = dbs["order"].fetch_one(
        "SELECT status, reason FROM orders WHERE order_id = :o", o=order_id
    )
    assert row is not None
    return row["status"], row["reason"]


def prepared_count(dbs: dict[str, Database], gtid: str) -> int:
    row = dbs["coordinator"].fetch_one(
        "SELECT count(*) AS n FROM pg_prepared_xacts WHERE gid LIKE :p", p=f"{gtid}:%"
    )
    return int(row["n"]) if row else -1


def test_crash_after_commit_decision_is_committed_by_recovery(parts, dbs, reconciler):
    txn = staged_order(dbs)
    before = snapshot(dbs)
    parts["log"].begin(txn["gtid"], "2pc", txn["branches"], lease_s=0, durable=False)
    prepare_all(parts, txn)
    assert parts["log"].move(txn["gtid"], "preparing", "commit", lease_s=0) == "committing"
    # ...the coordinator dies here: nothing of phase 2 happened.
    assert prepared_count(dbs, txn["gtid"]) == 2

    parts["recovery"].finish_in_doubt()

    assert status_of(parts, txn["gtid"]) == "committed"
    assert prepared_count(dbs, txn["gtid"]) == 0
    assert order_status(dbs, txn["order_id"]) == ("pending", None), "no branch of its own"
    reconciler.run_once()
    assert order_status(dbs, txn["order_id"]) == ("confirmed", None)
    after = snapshot(dbs)
    assert after["stock"]["sold"] == before["stock"]["sold"] + 3
    assert after["wallet"]["spent_cents"] == before["wallet"]["spent_cents"] + 100


def test_crash_before_decision_is_rolled_back_by_recovery(parts, dbs, reconciler):
    txn = staged_order(dbs)
    before = snapshot(dbs)
    parts["log"].begin(txn["gtid"], "2pc", txn["branches"], lease_s=0, durable=False)
    prepare_all(parts, txn)
    # ...the coordinator dies before deciding; its lease has run out.

    parts["recovery"].finish_in_doubt()

    assert status_of(parts, txn["gtid"]) == "aborted"
    assert prepared_count(dbs, txn["gtid"]) == 0
    reconciler.run_once()
    assert order_status(dbs, txn["order_id"]) == ("failed", "timeout")
    assert snapshot(dbs) == before


def test_orphan_prepared_branch_unknown_to_the_log_is_rolled_back(parts, dbs, reconciler):
    txn = staged_order(dbs)
    before = snapshot(dbs)
    prepare_all(parts, txn)  # prepared, but the log never heard of it (lost begin)

    parts["recovery"].resolve_orphans()

    assert prepared_count(dbs, txn["gtid"]) == 0
    assert snapshot(dbs) == before
    reconciler.run_once()  # the check-back records the unknown gtid as aborted
    assert order_status(dbs, txn["order_id"]) == ("failed", "timeout")
    assert parts["log"].begin(txn["gtid"], "2pc", [], lease_s=0, durable=False) is None


def test_live_transactions_are_not_touched(parts, dbs, reconciler):
    txn = staged_order(dbs)
    begun = parts["log"].begin(txn["gtid"], "2pc", txn["branches"], lease_s=60, durable=False)
    prepare_all(parts, txn)
    parts["recovery"].run_once()
    assert status_of(parts, txn["gtid"]) == "preparing"
    assert prepared_count(dbs, txn["gtid"]) == 2
    reconciler.run_once()
    assert order_status(dbs, txn["order_id"]) == ("pending", None), "still undecided"
    # The driver finishes it as usual.
    decided = parts["driver"].decide(begun, "commit", None)
    assert decided.status == "committing"
    assert parts["driver"].finish(decided).status == "committed"
    reconciler.run_once()
    assert order_status(dbs, txn["order_id"]) == ("confirmed", None)


def test_two_recoverers_never_claim_the_same_transaction(parts, dbs):
    gtids = [f"gtx-it-claim-{next(_ids)}" for _ in range(12)]
    for gtid in gtids:
        parts["log"].begin(gtid, "2pc", [], lease_s=0, durable=True)
    with ThreadPoolExecutor(max_workers=2) as pool:
        claims = list(pool.map(lambda _: parts["log"].claim_expired(8, 30), range(2)))
    mine = [{t.gtid for t in claim} & set(gtids) for claim in claims]
    assert not mine[0] & mine[1]
    assert len(mine[0] | mine[1]) == len(gtids)
    with dbs["coordinator"].transaction() as conn:
        conn.execute(text("DELETE FROM global_txns WHERE gtid = ANY(:g)"), {"g": gtids})
