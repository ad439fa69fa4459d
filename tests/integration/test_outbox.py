"""The outbox on a real Postgres: events commit with the caller's transaction, in order,
and the commit wakes the relay (LISTEN) without its one-second poll."""

from __future__ import annotations

import select
import time
from collections.abc import Callable, Iterator

import psycopg2
import pytest
from sqlalchemy import text

from paxkit.db import Database
from paxkit.messaging import Message
from paxkit.outbox import CHANNEL, enqueue_all

WAKE_DEADLINE_S = 0.5  # well under the relay's idle poll (1 s)


@pytest.fixture(scope="module")
def outbox_db(scratch_db: Callable[[str], Database]) -> Database:
    return scratch_db("inventory")


@pytest.fixture
def listener(outbox_db: Database) -> Iterator[psycopg2.extensions.connection]:
    url = outbox_db.engine.url.set(drivername="postgresql")
    conn = psycopg2.connect(url.render_as_string(hide_password=False))
    conn.autocommit = True
    conn.cursor().execute(f"LISTEN {CHANNEL}")
    yield conn
    conn.close()


def woken(listener: psycopg2.extensions.connection) -> bool:
    deadline = time.monotonic() + WAKE_DEADLINE_S
    while time.monotonic() < deadline:
        listener.poll()
        if listener.notifies:
            return True
        select.select([listener], [], [], max(0.0, deadline - time.monotonic()))
    return False


def unsent_keys(db: Database, gtid: str) -> list[str]:
    rows = db.fetch_all(
        "SELECT routing_key FROM outbox WHERE payload->>'gtid' = :g AND sent_at IS NULL "
        "ORDER BY id",
        g=gtid,
    )
    return [r["routing_key"] for r in rows]


def test_events_commit_with_the_caller_in_order_and_wake_the_relay(outbox_db, listener):
    keys = ["txn.begun", "txn.placed.coupon", "txn.placed.inventory"]
    with outbox_db.transaction() as conn:
        enqueue_all(conn, [Message(k, {"gtid": "gtx-outbox-1"}) for k in keys])
        assert not woken(listener), "nothing is announced before the commit"
    assert woken(listener)
    assert unsent_keys(outbox_db, "gtx-outbox-1") == keys


def test_a_rolled_back_transaction_leaves_no_event_and_wakes_nobody(outbox_db, listener):
    with pytest.raises(RuntimeError), outbox_db.transaction() as conn:
        enqueue_all(conn, [Message("txn.begun", {"gtid": "gtx-outbox-2"})])
        conn.execute(text("SELECT 1"))
        raise RuntimeError("the business change failed")
    assert not woken(listener)
    assert unsent_keys(outbox_db, "gtx-outbox-2") == []
