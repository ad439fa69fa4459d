"""The SQL acceptor (paxkit/acceptors.py) on real Postgres: its promises and accepts hold
across reconnects, proposers racing in threads never get two values chosen, a database
that does not answer is one answer fewer, and the sweep's columns and retention work.

The acceptors live in scratch copies of the acceptor databases, so the e2e stack's sweep
never meets the instances made here."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from paxkit.acceptors import ABORT, ACCEPTOR_RETENTION, COMMIT, Acceptor, Acceptors, SqlAcceptor
from paxkit.config import Settings
from paxkit.db import Database, make_engine
from paxkit.faults import Faults
from paxkit.migrate import apply_migrations, drop_database, ensure_database
from paxkit.paxos import Accept, Accepted, Ballot, Nack, Prepare, Promise, Vote
from paxkit.schema import ACCEPTOR_SQL

_ids = itertools.count(1)
CLOSED = "postgresql://postgres@127.0.0.1:1/nowhere"


def instance() -> str:
    return f"gtx-it-acceptor-{next(_ids)}"


@pytest.fixture(scope="module")
def urls(fresh_databases: Settings) -> Iterator[list[str]]:
    made = [f"{fresh_databases.db_urls[name]}_scratch" for name in fresh_databases.acceptors]
    for url in made:
        drop_database(url)
        ensure_database(url)
        apply_migrations(url, [ACCEPTOR_SQL])
    yield made
    for url in made:
        drop_database(url)


def connect(name: str, url: str) -> SqlAcceptor:
    return SqlAcceptor(name, Database(make_engine(url, pool_size=2)), timeout_s=2.0)


@pytest.fixture(scope="module")
def acceptors(urls: list[str]) -> Iterator[list[SqlAcceptor]]:
    made = [connect(f"acceptor{n}", url) for n, url in enumerate(urls, 1)]
    yield made
    for acceptor in made:
        acceptor.db.dispose()


@pytest.fixture(scope="module")
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=24) as executor:
        yield executor


def group(members: list[SqlAcceptor], pool: ThreadPoolExecutor) -> Acceptors:
    acceptors: list[Acceptor] = list(members)
    return Acceptors(acceptors, pool, timeout_s=5.0, faults=Faults("coordinator", None))


def test_promises_and_accepts_hold_across_reconnects(urls):
    gtid, url = instance(), urls[0]
    p2, q1, q3 = Ballot(2, "p"), Ballot(1, "q"), Ballot(3, "q")
    first = connect("acceptor1", url)
    assert first.prepare(gtid, Prepare(p2)).reply == Promise(p2, "acceptor1", None)
    first.db.dispose()

    second = connect("acceptor1", url)
    assert second.accept(gtid, Accept(q1, COMMIT)) == Nack(q1, "acceptor1", p2)
    assert second.accept(gtid, Accept(p2, ABORT)) == Accepted(p2, "acceptor1", ABORT)
    assert second.prepare(gtid, Prepare(p2)).reply == Promise(p2, "acceptor1", Vote(p2, ABORT))
    second.db.dispose()

    third = connect("acceptor1", url)
    promise = third.prepare(gtid, Prepare(q3)).reply
    assert promise == Promise(q3, "acceptor1", Vote(p2, ABORT))  # it still reports its vote
    assert third.prepare(gtid, Prepare(q1)).reply == Nack(q1, "acceptor1", q3)
    assert third.accept(gtid, Accept(p2, COMMIT)) == Nack(p2, "acceptor1", q3)
    row = third.db.fetch_one(
        "SELECT promised_round, promised_by, accepted_round, accepted_by, accepted_value "
        "FROM paxos_instances WHERE instance = :i",
        i=gtid,
    )
    assert row == {
        "promised_round": 3,
        "promised_by": "q",
        "accepted_round": 2,
        "accepted_by": "p",
        "accepted_value": ABORT,
    }
    third.db.dispose()


def test_members_are_registered_once_and_reported_with_every_promise(acceptors):
    gtid, acceptor = instance(), acceptors[0]
    acceptor.register(gtid, ["inventory", "coupon"])
    acceptor.register(gtid, ["redpacket"])  # a second registration changes nothing
    assert acceptor.prepare(gtid, Prepare(Ballot(1, "p"))).members == ("inventory", "coupon")
    late = instance()
    acceptor.prepare(late, Prepare(Ballot(1, "p")))  # a takeover came first: no members yet
    acceptor.register(late, ["inventory"])
    assert acceptor.prepare(late, Prepare(Ballot(2, "p"))).members == ("inventory",)


def test_the_sweep_lists_undecided_instances_and_retention_prunes_decided_ones(acceptors):
    decided, open_ = instance(), instance()
    acceptor = acceptors[1]
    for gtid in (decided, open_):
        acceptor.register(gtid, ["inventory"])
    listed = acceptor.undecided(0.0, 1000)
    assert {decided, open_} <= set(listed) and listed[open_] == ("inventory",)
    assert open_ not in acceptor.undecided(3600.0, 1000)  # younger than that

    acceptor.mark_decided({decided: COMMIT})
    assert decided not in acceptor.undecided(0.0, 1000)
    pruned = ACCEPTOR_RETENTION[0].prune(acceptor.db, 0.0, 1000, 1)
    assert pruned >= 1
    kept = acceptor.db.fetch_all(
        "SELECT instance FROM paxos_instances WHERE instance = ANY(:i)", i=[decided, open_]
    )
    assert [r["instance"] for r in kept] == [open_]


def test_ballot_zero_is_chosen_with_one_acceptor_database_unreachable(acceptors, pool):
    gtid = instance()
    members = group([acceptors[0], connect("acceptor2", CLOSED), acceptors[2]], pool)
    registered, steps = members.register(gtid, ["inventory"])
    assert registered
    assert len([s for s in steps if s.outcome == "ok"]) >= 2
    learned = members.propose_first(gtid, "p", COMMIT)
    assert (learned.value, learned.ballot) == (COMMIT, Ballot(0, "p"))
    assert ("paxos", "chosen") in {(s.acceptor, s.op) for s in learned.steps}


def test_no_majority_no_decision(acceptors, pool):
    gtid = instance()
    members = group(
        [acceptors[0], connect("acceptor2", CLOSED), connect("acceptor3", CLOSED)], pool
    )
    assert members.register(gtid, ["inventory"])[0] is False
    assert members.propose_first(gtid, "p", COMMIT).value is None
    assert members.take_over(gtid, "q").value is None


def test_concurrent_proposers_never_get_two_values_chosen(acceptors, pool):
    """Four proposers, two for each value, race over the same instances in threads, each
    trying to take it over; the rows themselves must show one value at most per instance."""
    members = group(acceptors, pool)
    proposers = {"p1": COMMIT, "p2": ABORT, "p3": COMMIT, "p4": ABORT}
    gtids = [instance() for _ in range(15)]
    learned: dict[tuple[str, str], str | None] = {}

    def race(name: str, value: str) -> None:
        for gtid in gtids:
            learned[(gtid, name)] = members.take_over(gtid, name, value).value

    threads = [threading.Thread(target=race, args=p) for p in proposers.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(t.is_alive() for t in threads)

    decided = 0
    for gtid in gtids:
        values = {learned[(gtid, name)] for name in proposers} - {None}
        assert len(values) <= 1, (gtid, values)
        on_disk = chosen_on_disk(acceptors, gtid)
        assert on_disk <= values, (gtid, on_disk, values)
        decided += bool(values)
    assert decided > 0, "proposers left alone in turn must get something chosen"


def chosen_on_disk(acceptors: list[SqlAcceptor], gtid: str) -> set[str]:
    """Values a majority of the acceptors hold as accepted in one ballot."""
    votes: dict[tuple[int, str, str], int] = {}
    for acceptor in acceptors:
        row = acceptor.db.fetch_one(
            "SELECT accepted_round, accepted_by, accepted_value FROM paxos_instances "
            "WHERE instance = :i AND accepted_value IS NOT NULL",
            i=gtid,
        )
        if row is not None:
            key = (row["accepted_round"], row["accepted_by"], row["accepted_value"])
            votes[key] = votes.get(key, 0) + 1
    return {value for (_, _, value), n in votes.items() if n >= 2}
