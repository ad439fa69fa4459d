"""Leases with fencing tokens (paxkit/lease.py) against the project's real Postgres.

Expiry is the database's: a lease of 0.2 s is waited out by polling until the database
itself no longer shows it live, never by sleeping on the test's clock. The leases live in
a scratch copy of the order database, the one component that migrates paxkit/sql_lease.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from infra.pgcluster import pg_ctl
from paxkit.config import Settings
from paxkit.db import Database, run
from paxkit.lease import Fence, Lease, LeaseLost, Leases, StaleToken
from tests.helpers import wait_until

SHORT_TTL_S = 0.2
LONG_TTL_S = 30.0
_names = itertools.count(1)


@pytest.fixture(scope="module")
def db(scratch_db: Callable[[str], Database]) -> Database:
    database = scratch_db("order")
    with database.transaction() as conn:
        run(conn, "CREATE TABLE balances (account text PRIMARY KEY, cents bigint NOT NULL)")
    return database


@pytest.fixture
def name() -> str:
    return f"it-lease-{next(_names)}"


def holders(db: Database) -> tuple[Leases, Leases]:
    return Leases(db, "holder-a"), Leases(db, "holder-b")


def granted(lease: Lease | None) -> Lease:
    assert lease is not None, "the lease was not granted"
    return lease


def wait_out(leases: Leases, name: str) -> None:
    """Poll the database until it shows no live lease on `name`."""
    wait_until(lambda: leases.held(name) is None, 10, 0.05, what=f"lease {name} to lapse")


def stored(db: Database, name: str) -> dict[str, object]:
    row = db.fetch_one("SELECT owner, token FROM leases WHERE name = :n", n=name)
    assert row is not None
    return row


def test_the_token_goes_up_on_every_grant_across_release_expiry_and_takeover(db, name):
    a, b = holders(db)
    first = granted(a.acquire(name, LONG_TTL_S))
    assert a.release(first)
    second = granted(b.acquire(name, SHORT_TTL_S))
    wait_out(a, name)
    third = granted(a.acquire(name, LONG_TTL_S))

    assert [first.token, second.token, third.token] == [1, 2, 3]
    assert [first.owner, second.owner, third.owner] == ["holder-a", "holder-b", "holder-a"]
    assert stored(db, name) == {"owner": "holder-a", "token": 3}


def test_a_live_lease_is_granted_to_no_one_else_not_even_its_owner_again(db, name):
    a, b = holders(db)
    lease = granted(a.acquire(name, LONG_TTL_S))

    assert b.acquire(name, LONG_TTL_S) is None
    assert a.acquire(name, LONG_TTL_S) is None
    assert b.held(name) == lease
    assert stored(db, name) == {"owner": "holder-a", "token": 1}


def test_only_the_owner_renews_and_releases(db, name):
    a, b = holders(db)
    lease = granted(a.acquire(name, LONG_TTL_S))

    with pytest.raises(LeaseLost):
        b.renew(lease, LONG_TTL_S)
    assert not b.release(lease)
    assert a.held(name) == lease, "the outsider changed nothing"

    renewed = a.renew(lease, LONG_TTL_S)
    assert (renewed.token, renewed.owner) == (lease.token, "holder-a")
    assert renewed.expires > lease.expires, "pushed out by the database's clock"
    assert a.release(renewed)
    assert a.held(name) is None
    assert not a.release(renewed), "released once"


def test_a_renewal_after_expiry_fails_before_and_after_another_holder_takes_over(db, name):
    a, b = holders(db)
    lease = granted(a.acquire(name, SHORT_TTL_S))
    wait_out(a, name)

    with pytest.raises(LeaseLost):
        a.renew(lease, LONG_TTL_S)
    successor = granted(b.acquire(name, LONG_TTL_S))
    with pytest.raises(LeaseLost, match="no longer held"):
        a.renew(lease, LONG_TTL_S)
    assert not a.release(lease), "a lapsed holder cannot free its successor's lease"
    assert b.held(name) == successor and successor.token == lease.token + 1


def test_tokens_survive_a_crash_restart_of_the_database(db, name, dbs, settings: Settings):
    a, _ = holders(db)
    before = granted(a.acquire(name, LONG_TTL_S))
    assert a.release(before)

    pg_ctl(settings, "-m", "immediate", "-w", "restart")  # no shutdown checkpoint: a crash
    for handle in (db, *dbs.values()):
        handle.dispose()  # the pools' connections died with the server
    after = granted(a.acquire(name, LONG_TTL_S))

    assert after.token == before.token + 1, "the counter came back from the WAL, not from 1"


# ---------------------------------------------------------------- the resource side


def deposit(db: Database, fence: Fence | None, token: int, cents: int) -> None:
    """Write a balance the way a lease holder does: fenced under its token, or not."""
    with db.transaction() as conn:
        if fence is not None:
            fence.check(conn, token)
        run(
            conn,
            "INSERT INTO balances (account, cents) VALUES (:a, :c) "
            "ON CONFLICT (account) DO UPDATE SET cents = excluded.cents",
            {"a": fence.resource if fence else "unfenced", "c": cents},
        )


def balance(db: Database, account: str) -> int:
    row = db.fetch_one("SELECT cents FROM balances WHERE account = :a", a=account)
    return int(row["cents"]) if row else -1


def test_the_fence_admits_the_same_or_a_higher_token_and_refuses_a_lower_one(db, name):
    fence = Fence(name)
    deposit(db, fence, 5, 100)
    deposit(db, fence, 5, 110)
    deposit(db, fence, 7, 120)

    with pytest.raises(StaleToken) as refused:
        deposit(db, fence, 6, 999)

    assert (refused.value.resource, refused.value.token) == (name, 6)
    assert balance(db, name) == 120, "the refused write rolled back with its transaction"
    assert db.fetch_one("SELECT token FROM fences WHERE resource = :r", r=name) == {"token": 7}


@pytest.mark.parametrize("fencing", [True, False], ids=["fencing", "no-fencing"])
def test_a_holder_paused_past_its_ttl_loses_its_successors_update_unless_fenced(db, name, fencing):
    """Kleppmann's lost update: A reads, pauses past its lease, B takes the lease and
    writes, A wakes and writes what it computed before the pause."""
    fence = Fence(name) if fencing else None
    account = fence.resource if fence else "unfenced"
    deposit(db, fence, 0, 100)
    a, b = holders(db)
    lease_a = granted(a.acquire(name, SHORT_TTL_S))
    read_by_a = balance(db, account)

    wait_out(a, name)  # A is paused here, past its time to live
    lease_b = granted(b.acquire(name, LONG_TTL_S))
    deposit(db, fence, lease_b.token, balance(db, account) + 50)
    write_by_a = read_by_a + 1  # A wakes, and writes what it computed before the pause

    if fencing:
        with pytest.raises(StaleToken):
            deposit(db, fence, lease_a.token, write_by_a)
        assert balance(db, account) == 150, "B's deposit stands"
    else:
        deposit(db, fence, lease_a.token, write_by_a)
        assert balance(db, account) == 101, "B's deposit of 50 is lost"
