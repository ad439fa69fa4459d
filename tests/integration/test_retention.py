"""Retention against real Postgres and a real coordinator over HTTP: old bookkeeping goes in
bounded batches, and no row goes that a late protocol call, the msg check-back or a
repeated message can still need.

The coordinator app runs on loopback over a scratch log database; participants' rules run
on scratch copies of the red-packet and order databases, so balances can be asserted. The
horizon is an hour, and a row is made old by moving its timestamps two hours back.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import text

from coordinator.app import create_app as coordinator_app
from coordinator.log import RETENTION_RULES
from paxkit.barrier import (
    BarrierBranch,
    insert_barrier,
)
from paxkit.config import Settings
from paxkit.db import Database
from paxkit.faults import Faults
from paxkit.http import ServiceClient
from paxkit.notify import NOTIFICATION_RULES
from paxkit.retention import MESSAGING_RULES, Retention, coordinator_outcomes, participant_rules
from paxkit.xa import XaBranch
from services.order.app import create_app as order_app
from services.redpacket.app import SPEC as REDPACKET
from services.redpacket.app import create_app as redpacket_app
from tests.conftest import TEST_ENV
from tests.helpers import wait_until
from tests.integration.gateway_kit import serving

HORIZON_S = 3600.0
AGE = "interval '2 hours'"
USER = 6
PROTOCOL_TABLES = ("barrier", "xa_branch_log", "threepc_branches", "outbox", "inbox")
_ids = itertools.count(1)

Txn = Callable[..., str]


def new_gtid() -> str:
    return f"it-ret-{next(_ids)}"


@pytest.fixture(scope="module")
def log_db(scratch_db) -> Database:
    return scratch_db("coordinator")


@pytest.fixture(scope="module")
def coordinator_url(fresh_databases: Settings, log_db: Database) -> Iterator[str]:
    """The real coordinator app, on loopback, over the scratch log."""
    url = log_db.engine.url.render_as_string(hide_password=False)
    settings = dataclasses.replace(
        fresh_databases,
        db_urls={**fresh_databases.db_urls, "coordinator": url},
    )
    with serving(coordinator_app(settings)) as url:
        yield url


def client(url: str) -> ServiceClient:
    return ServiceClient("coordinator", url, 5.0, credential=TEST_ENV["PAXMART_SERVICE_TOKEN"])


@pytest.fixture
def txn(log_db: Database) -> Txn:
    """Log a transaction in `status`, last updated (finished, when final) `ago_s` back."""

    def log(status: str, ago_s: float = 0.0, gtid: str | None = None, mode: str = "tcc") -> str:
        gtid = gtid or new_gtid()
        run(
            log_db,
            "INSERT INTO global_txns (gtid, mode, status, branches, lease_until, updated_at) "
            "VALUES (:g, :mode, :status, '[]', now() + interval '1 hour', "
            "now() - make_interval(secs => :ago))",
            g=gtid,
            mode=mode,
            status=status,
            ago=ago_s,
        )
        return gtid

    return log


@pytest.fixture(scope="module")
def wallets(scratch_db) -> Database:
    return scratch_db("redpacket")


@pytest.fixture(scope="module")
def orders(scratch_db) -> Database:
    return scratch_db("order")


@pytest.fixture(autouse=True)
def empty_protocol_tables(wallets: Database, orders: Database) -> None:
    """Each test counts what it pruned: it starts with no protocol rows at all."""
    for db in (wallets, orders):
        run(db, f"TRUNCATE {', '.join(PROTOCOL_TABLES)}")
    run(orders, "TRUNCATE notification_attempts, notifications")


@pytest.fixture
def tcc(wallets: Database) -> BarrierBranch:
    return BarrierBranch(
        "redpacket", wallets, Faults("redpacket", None), 500, tcc=REDPACKET.tcc, saga=REDPACKET.saga
    )


def participant(db: Database, coordinator_url: str, **batching: int) -> Retention:
    rules = participant_rules(coordinator_outcomes(client(coordinator_url)))
    return Retention("redpacket", db, rules, HORIZON_S, **batching)


def run(db: Database, sql: str, **params: Any) -> None:
    """One statement in its own transaction."""
    with db.transaction() as conn:
        conn.execute(text(sql), params)


def backdate(db: Database, table: str, *columns: str, where: str = "true", **params: Any) -> None:
    moved = ", ".join(f"{c} = {c} - {AGE}" for c in columns)
    run(db, f"UPDATE {table} SET {moved} WHERE {where}", **params)


def rows(db: Database, table: str, where: str = "true", **params: Any) -> int:
    row = db.fetch_one(f"SELECT count(*) AS n FROM {table} WHERE {where}", **params)
    return int(row["n"]) if row else -1


def wallet(db: Database) -> dict[str, Any]:
    row = db.fetch_one(
        "SELECT balance_cents, frozen_cents, spent_cents FROM wallets WHERE user_id = :u", u=USER
    )
    assert row is not None
    return row


def hold(gtid: str, amount: int = 300) -> dict[str, Any]:
    return {"order_id": f"o-{gtid}", "user_id": USER, "amount_cents": amount}


# ---------------------------------------------------------------- messaging: outbox, inbox


def add_outbox(db: Database, n: int, sent: bool, old: bool) -> None:
    run(
        db,
        "INSERT INTO outbox (routing_key, payload, created_at, sent_at) "
        f"SELECT 'it.retention', '{{}}'::jsonb, at, CASE WHEN :sent THEN at END "
        f"FROM generate_series(1, :n), (SELECT now() - CASE WHEN :old THEN {AGE} "
        "ELSE interval '0' END AS at) made",
        n=n,
        sent=sent,
        old=old,
    )


def test_old_sent_outbox_rows_go_in_bounded_batches_and_unsent_ones_stay(orders):
    add_outbox(orders, 25, sent=True, old=True)
    add_outbox(orders, 3, sent=False, old=True)
    add_outbox(orders, 2, sent=True, old=False)
    retention = Retention("order", orders, MESSAGING_RULES, HORIZON_S, batch=10, max_batches=2)

    assert retention.run_once()["outbox"] == 20, "two batches of ten, no more in one run"
    assert retention.run_once()["outbox"] == 5
    assert retention.run_once()["outbox"] == 0
    assert rows(orders, "outbox", "sent_at IS NULL") == 3, "unsent events are the relay's"
    assert rows(orders, "outbox") == 5


def test_old_inbox_rows_go_and_recent_ones_stay(orders):
    fill = "INSERT INTO inbox (message_id, consumer) SELECT gen_random_uuid(), 'it' "
    run(orders, fill + "FROM generate_series(1, 7)")
    backdate(orders, "inbox", "received_at")
    run(orders, fill)

    assert Retention("order", orders, MESSAGING_RULES, HORIZON_S).run_once()["inbox"] == 7
    assert rows(orders, "inbox") == 1


# ---------------------------------------------------------------- barrier rows (TCC)


def test_an_unfinished_transactions_barrier_rows_stay_so_a_late_cancel_releases_the_hold(
    tcc, wallets, coordinator_url, txn
):
    gtid, start = txn("preparing"), wallet(wallets)
    assert tcc.call("try", gtid, hold(gtid)).effect == "applied"
    backdate(wallets, "barrier", "created_at", where="gtid = :g", g=gtid)

    assert participant(wallets, coordinator_url).run_once()["barrier"] == 0
    cancel = tcc.call("cancel", gtid, hold(gtid))

    assert (cancel.ok, cancel.effect) == (True, "applied"), "not mistaken for a null compensation"
    assert wallet(wallets) == start


def test_a_recently_finished_transactions_rows_stay_and_still_block_a_late_try(
    tcc, wallets, coordinator_url, txn
):
    gtid, start = txn("aborted", ago_s=600), wallet(wallets)
    assert tcc.call("cancel", gtid, hold(gtid)).effect == "null"
    backdate(wallets, "barrier", "created_at", where="gtid = :g", g=gtid)

    assert participant(wallets, coordinator_url).run_once()["barrier"] == 0
    late = tcc.call("try", gtid, hold(gtid))

    assert (late.ok, late.effect) == (False, "refused")
    assert wallet(wallets) == start


def test_rows_of_transactions_final_longer_than_the_horizon_go_and_of_unknown_ones_too(
    tcc, wallets, coordinator_url, txn
):
    committed, aborted, unknown = (
        txn("committed", ago_s=7200),
        txn("aborted", ago_s=7200),
        new_gtid(),
    )
    live = txn("committing")
    for gtid in (committed, live):
        assert tcc.call("try", gtid, hold(gtid)).effect == "applied"
        assert tcc.call("confirm", gtid, hold(gtid)).effect == "applied"
    assert tcc.call("cancel", aborted, hold(aborted)).effect == "null"
    with wallets.transaction() as conn:
        assert insert_barrier(conn, unknown, "redpacket", "try", "try")
    backdate(wallets, "barrier", "created_at")

    assert participant(wallets, coordinator_url).run_once()["barrier"] == 2 + 2 + 1
    left = {r["gtid"] for r in wallets.fetch_all("SELECT DISTINCT gtid FROM barrier")}
    assert left == {live}


def test_kept_transactions_do_not_starve_the_ones_behind_them(wallets, coordinator_url, txn):
    kept = [txn("preparing") for _ in range(15)]
    done = [txn("committed", ago_s=7200) for _ in range(10)]
    with wallets.transaction() as conn:
        for gtid in kept + done:  # the kept rows come first in the table
            insert_barrier(conn, gtid, "redpacket", "try", "try")
    backdate(wallets, "barrier", "created_at")

    pruned = participant(wallets, coordinator_url, batch=10, max_batches=3).run_once()

    assert pruned["barrier"] == 10
    assert {r["gtid"] for r in wallets.fetch_all("SELECT gtid FROM barrier")} == set(kept)


def test_without_an_answer_from_the_coordinator_every_transaction_row_stays(wallets, txn):
    gtid = txn("committed", ago_s=7200)
    with wallets.transaction() as conn:
        insert_barrier(conn, gtid, "redpacket", "try", "try")
    backdate(wallets, "barrier", "created_at")
    add_outbox(wallets, 4, sent=True, old=True)
    unreachable = "http://127.0.0.1:9"  # discard port: nothing answers

    pruned = participant(wallets, unreachable).run_once()

    assert "barrier" not in pruned, "no answer: nothing is known finished"
    assert pruned["outbox"] == 4, "the other tables are pruned all the same"
    assert rows(wallets, "barrier") == 1


def test_a_wrong_credential_gets_no_answer_either(wallets, coordinator_url, txn):
    gtid = txn("committed", ago_s=7200)
    with wallets.transaction() as conn:
        insert_barrier(conn, gtid, "redpacket", "try", "try")
    backdate(wallets, "barrier", "created_at")
    outsider = ServiceClient("coordinator", coordinator_url, 5.0, credential="wrong")
    rules = participant_rules(coordinator_outcomes(outsider))

    assert "barrier" not in Retention("redpacket", wallets, rules, HORIZON_S).run_once()
    assert rows(wallets, "barrier") == 1


# ---------------------------------------------------------------- XA branch log


@pytest.fixture
def xa(wallets: Database) -> XaBranch:
    return XaBranch("redpacket", wallets, REDPACKET.xa_action, Faults("redpacket", None), 500)


def test_xa_tombstones_and_commit_records_stay_until_final_past_the_horizon(
    xa, wallets, coordinator_url, txn
):
    recent_abort, old_commit, live_commit = txn("aborted", 60, mode="2pc"), new_gtid(), new_gtid()
    txn("committed", 7200, gtid=old_commit, mode="2pc")
    txn("committing", gtid=live_commit, mode="2pc")
    assert xa.rollback(recent_abort) == "rolled_back"  # before its prepare came
    for gtid in (old_commit, live_commit):
        assert xa.prepare(gtid, {**hold(gtid, 100), "gtid": gtid}).yes
        assert xa.commit(gtid) == "committed"
    backdate(wallets, "xa_branch_log", "created_at")
    start = wallet(wallets)

    assert participant(wallets, coordinator_url).run_once()["xa_branch_log"] == 1
    late = xa.prepare(recent_abort, {**hold(recent_abort, 100), "gtid": recent_abort})
    repeated = xa.prepare(live_commit, {**hold(live_commit, 100), "gtid": live_commit})

    assert (late.yes, late.reason) == (False, "aborted"), "the tombstone still blocks it"
    assert repeated.yes and xa.commit(live_commit) == "already_committed"
    assert wallet(wallets) == start, "neither took money again"
    assert rows(wallets, "xa_branch_log", "gtid = :g", g=old_commit) == 0


# ---------------------------------------------------------------- notifications (order)


def add_notification(db: Database, state: str, attempts: int) -> int:
    """An order with a notification in `state` and that many attempts; returns its id."""
    with db.transaction() as conn:
        notification_id: int = conn.execute(
            text(
                "WITH o AS (INSERT INTO orders (order_id, user_id, mode, txn_mode, status, items, "
                "total_cents, discount_cents, red_packet_cents, payable_cents) "
                "VALUES (:o, 1, 'msg', 'msg', 'confirmed', '[]', 0, 0, 0, 0) RETURNING order_id), "
                "n AS (INSERT INTO notifications (order_id, url, attempts, delivered_at, "
                "gave_up_at) SELECT order_id, 'http://127.0.0.1:1/hook', :n, "
                "CASE WHEN :state = 'delivered' THEN now() END, "
                "CASE WHEN :state = 'gave_up' THEN now() END FROM o RETURNING id), "
                "a AS (INSERT INTO notification_attempts (notification_id, attempt, status_code) "
                "SELECT n.id, g, 500 FROM n, generate_series(1, :n) g) SELECT id FROM n"
            ),
            {"o": f"ord-{new_gtid()}", "n": attempts, "state": state},
        ).scalar_one()
    return notification_id


def test_finished_notifications_go_with_their_attempts_and_retried_ones_keep_theirs(orders):
    add_notification(orders, "delivered", attempts=2)
    add_notification(orders, "gave_up", attempts=5)
    retrying = add_notification(orders, "retrying", attempts=3)
    backdate(orders, "notification_attempts", "at")
    backdate(orders, "notifications", "created_at", "delivered_at", "gave_up_at")
    fresh = add_notification(orders, "delivered", attempts=1)
    backdate(orders, "notification_attempts", "at", where="notification_id = :id", id=fresh)

    pruned = Retention("order", orders, NOTIFICATION_RULES, HORIZON_S).run_once()

    assert pruned == {"notification_attempts": 2 + 5, "notifications": 2}
    left = {r["id"] for r in orders.fetch_all("SELECT id FROM notifications")}
    assert left == {retrying, fresh}
    assert rows(orders, "notification_attempts") == 3 + 1
    assert rows(orders, "orders", "order_id LIKE 'ord-it-ret-%'") == 4, "orders are never pruned"


# ---------------------------------------------------------------- the coordinator's own


def add_timeline(db: Database, gtid: str) -> None:
    """Two timeline events and one msg report of a transaction."""
    run(
        db,
        "WITH e AS (INSERT INTO branch_events (gtid, branch, op, outcome) "
        "VALUES (:g, 'redpacket', 'try', 'ok'), (:g, 'redpacket', 'confirm', 'ok')) "
        "INSERT INTO msg_reports (gtid, branch, op, ok) VALUES (:g, 'redpacket', 'action', true)",
        g=gtid,
    )


def test_timelines_and_reports_go_with_transactions_final_past_the_horizon(log_db, txn):
    old, recent, live, unknown = (
        txn("committed", 7200),
        txn("aborted", 60),
        txn("submitted"),
        new_gtid(),
    )
    for gtid in (old, recent, live, unknown):
        add_timeline(log_db, gtid)
    backdate(log_db, "branch_events", "at")
    backdate(log_db, "msg_reports", "received_at")

    pruned = Retention("coordinator", log_db, RETENTION_RULES, HORIZON_S).run_once()

    assert (pruned["branch_events"], pruned["msg_reports"]) == (2 + 2, 1 + 1)
    for gtid in (recent, live):
        assert rows(log_db, "branch_events", "gtid = :g", g=gtid) == 2
        assert rows(log_db, "msg_reports", "gtid = :g", g=gtid) == 1
    assert rows(log_db, "global_txns", "gtid = ANY(:g)", g=[old, recent, live]) == 3, (
        "the log itself is kept: the check-back presumes abort for a gtid it doesn't know"
    )


def test_the_coordinator_says_which_transactions_are_finished_and_since_when(coordinator_url, txn):
    old, live, unknown = txn("aborted", 7200), txn("aborting"), new_gtid()
    reply = client(coordinator_url).post(
        "/transactions/statuses", json={"gtids": [old, live, unknown]}
    )
    statuses = reply.body["statuses"]
    assert statuses[live] == {"status": "aborting", "final_for_s": None}
    assert statuses[unknown] == {"status": "unknown", "final_for_s": None}
    assert statuses[old]["status"] == "aborted" and 7199 < statuses[old]["final_for_s"] < 7300
    bad = client(coordinator_url).post("/transactions/statuses", json={"gtids": ["no spaces"]})
    assert (bad.status, bad.body["error"]["field"]) == (400, "gtid")


# ---------------------------------------------------------------- wiring and metrics


@pytest.fixture(scope="module")
def quiet(fresh_databases: Settings) -> Settings:
    return fresh_databases


def gauges(metrics: str, name: str, component: str) -> dict[str, float]:
    """{table: value} of one gauge for one component, out of a /metrics page."""
    found = {}
    for line in metrics.splitlines():
        if line.startswith(f'{name}{{component="{component}",table="'):
            table = line.split('table="', 1)[1].split('"', 1)[0]
            found[table] = float(line.rsplit(" ", 1)[1])
    return found


@pytest.mark.parametrize(
    ("factory", "component", "tables"),
    [
        (redpacket_app, "redpacket", set(PROTOCOL_TABLES)),
        (order_app, "order", {*PROTOCOL_TABLES, "notifications", "notification_attempts"}),
        (coordinator_app, "coordinator", {"branch_events", "msg_reports", "outbox", "inbox"}),
    ],
)
def test_every_table_under_retention_has_its_size_gauges(quiet, factory, component, tables):
    app = factory(quiet)
    assert set(app.extensions["paxmart.retention"].tables) == tables
    page = app.test_client().get("/metrics").get_data(as_text=True)
    assert set(gauges(page, "paxmart_table_rows", component)) == tables
    sizes = gauges(page, "paxmart_table_bytes", component)
    assert set(sizes) == tables and all(size > 0 for size in sizes.values())


def test_the_row_gauge_follows_the_table(quiet, dbs):
    """The estimate comes from the statistics, so it is polled, not read at once."""
    app = redpacket_app(quiet)
    db = dbs["redpacket"]
    add_outbox(db, 40, sent=True, old=False)

    def rows_gauge() -> float:
        page = app.test_client().get("/metrics")
        return gauges(page.get_data(as_text=True), "paxmart_table_rows", "redpacket")["outbox"]

    wait_until(lambda: rows_gauge() >= 40, 30, 0.5, what="the outbox row gauge to count 40")
    run(db, "DELETE FROM outbox WHERE routing_key = 'it.retention'")
    wait_until(lambda: rows_gauge() < 40, 30, 0.5, what="the outbox row gauge to drop")
