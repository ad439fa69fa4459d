"""Mode paxos (coordinator/paxoscommit.py over paxkit/acceptors.py) against in-memory fakes of
the log, the branches and the acceptors: majority rules, takeovers that must adopt an
accepted commit, duelling proposers, and the sweep that finishes what a log lost."""

from __future__ import annotations

import inspect
import itertools
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from coordinator.paxoscommit import PaxosCommit
from coordinator.ports import Branch, Txn
from coordinator.recovery import Recovery
from paxkit.acceptors import ABORT, COMMIT, Acceptor, Acceptors, SqlAcceptor
from paxkit.faults import Faults
from tests.unit.fakes import FakeAcceptor, FakeBranches, FakeTxnLog, no, ok
from tests.unit.test_drivers import NAMES, TIMEOUT_S

_ids = itertools.count(1)


@pytest.fixture
def acceptors(log: FakeTxnLog) -> list[FakeAcceptor]:
    return [FakeAcceptor(f"acceptor{n}", clock=lambda: log.now) for n in (1, 2, 3)]


def group(members: list[FakeAcceptor], pool: ThreadPoolExecutor) -> Acceptors:
    acceptors: list[Acceptor] = list(members)
    return Acceptors(acceptors, pool, timeout_s=2.0, faults=Faults("coordinator", None))


def paxos_driver(
    log: FakeTxnLog,
    branches: FakeBranches,
    acceptors: list[FakeAcceptor],
    pool: ThreadPoolExecutor,
    proposer: str = "coordinator-a",
) -> PaxosCommit:
    return PaxosCommit(
        log,
        branches,
        Faults("coordinator", None),
        pool,
        TIMEOUT_S,
        0.5,
        acceptors=group(acceptors, pool),
        proposer=lambda: proposer,
    )


def begun(log: FakeTxnLog) -> Txn:
    gtid = f"gtx-paxos-{next(_ids)}"
    parts = [Branch(name, {"order_id": f"ord-{gtid}"}) for name in NAMES]
    txn = log.begin(gtid, "paxos", parts, TIMEOUT_S, durable=True)
    assert txn is not None
    return txn


def recovery(log: FakeTxnLog, branches: FakeBranches, driver: PaxosCommit) -> Recovery:
    return Recovery(log, branches, {"paxos": driver}, 10, lease_s=TIMEOUT_S, base_delay_s=0.5)


def chosen_by_acceptors(acceptors: list[FakeAcceptor], gtid: str) -> set[str]:
    """Every value a majority accepted in one ballot, read from the acceptors themselves."""
    votes: dict[tuple[int, str, str], int] = {}
    for acceptor in acceptors:
        vote = acceptor.accepted(gtid)
        if vote is not None:
            votes[vote] = votes.get(vote, 0) + 1
    return {value for (_, _, value), n in votes.items() if n >= 2}


def ops(log: FakeTxnLog, gtid: str) -> list[tuple[str, str, str]]:
    return [(e.branch, e.op, e.outcome) for e in log.timeline[gtid]]


def test_the_fake_acceptor_has_the_interface_of_the_sql_one():
    members = [m for m in vars(Acceptor) if not m.startswith("_") and callable(vars(Acceptor)[m])]
    assert "prepare" in members
    for member in members:
        wanted = list(inspect.signature(getattr(Acceptor, member)).parameters)
        for implementation in (SqlAcceptor, FakeAcceptor):
            got = list(inspect.signature(getattr(implementation, member)).parameters)
            assert got == wanted, (implementation.__name__, member)


def test_every_yes_vote_commits_at_ballot_zero_chosen_by_the_acceptors(
    log, branches, acceptors, pool
):
    txn = begun(log)
    outcome = paxos_driver(log, branches, acceptors, pool).run(txn)
    assert (outcome.status, outcome.reason) == ("committed", None)
    assert log.status(txn.gtid) == "committed"
    assert sorted(branches.ops(txn.gtid)) == sorted(
        [("prepare", n) for n in NAMES] + [("commit", n) for n in NAMES]
    )
    assert chosen_by_acceptors(acceptors, txn.gtid) == {COMMIT}
    assert {a.accepted(txn.gtid) for a in acceptors if a.accepted(txn.gtid)} == {
        (0, "coordinator-a", COMMIT)
    }
    assert all(a.members[txn.gtid] == NAMES for a in acceptors)
    timeline = ops(log, txn.gtid)
    assert ("paxos", "chosen", "ok") in timeline
    assert sum(1 for e in timeline if e[1:] == ("accept", "ok")) >= 2
    assert log.durable == []  # the acceptors hold the decision: no fsync wait in the log


def test_a_no_vote_is_an_abort_chosen_by_paxos_and_every_branch_rolls_back(
    log, branches, acceptors, pool
):
    branches.answer("prepare", "redpacket", no("insufficient_balance"))
    txn = begun(log)
    outcome = paxos_driver(log, branches, acceptors, pool).run(txn)
    assert (outcome.status, outcome.reason) == ("aborted", "insufficient_balance")
    assert chosen_by_acceptors(acceptors, txn.gtid) == {ABORT}
    assert sorted(n for op, n in branches.ops(txn.gtid) if op == "rollback") == sorted(NAMES)


def test_one_acceptor_down_changes_nothing(log, branches, acceptors, pool):
    acceptors[1].down = True
    txn = begun(log)
    assert paxos_driver(log, branches, acceptors, pool).run(txn).status == "committed"
    assert chosen_by_acceptors(acceptors, txn.gtid) == {COMMIT}
    assert acceptors[1].accepted(txn.gtid) is None


def test_a_majority_down_prepares_nothing_and_decides_nothing(log, branches, acceptors, pool):
    acceptors[0].down = acceptors[2].down = True
    driver = paxos_driver(log, branches, acceptors, pool)
    txn = begun(log)
    outcome = driver.run(txn)
    assert outcome.status == "preparing"  # no answer yet; the order's outcome is unknown
    assert branches.ops(txn.gtid) == []  # registration failed: nothing was prepared
    assert log.status(txn.gtid) == "preparing"

    log.now += TIMEOUT_S + 1
    recovery(log, branches, driver).finish_in_doubt()
    assert log.status(txn.gtid) == "preparing", "still no majority: nothing is decided"

    acceptors[0].down = acceptors[2].down = False
    log.now += 60
    recovery(log, branches, driver).finish_in_doubt()
    assert (log.status(txn.gtid), log.txns[txn.gtid].reason) == ("aborted", "timeout")
    assert chosen_by_acceptors(acceptors, txn.gtid) == {ABORT}


def lose_two_acceptors_after_preparing(acceptors: list[FakeAcceptor]):
    """A branch answer: prepared, and meanwhile acceptor2 and acceptor3 went down."""

    def answer(op: str, name: str, gtid: str):
        acceptors[1].down = acceptors[2].down = True
        return ok(name, op)

    return answer


def test_ballot_zero_short_of_a_majority_leaves_it_undecided(log, branches, acceptors, pool):
    branches.answer("prepare", "redpacket", lose_two_acceptors_after_preparing(acceptors))
    txn = begun(log)
    assert paxos_driver(log, branches, acceptors, pool).run(txn).status == "preparing"
    assert acceptors[0].accepted(txn.gtid) == (0, "coordinator-a", COMMIT)
    assert [op for op, _ in branches.ops(txn.gtid)] == ["prepare"] * 3
    assert log.status(txn.gtid) == "preparing"


def test_a_takeover_must_adopt_a_commit_one_acceptor_accepted(log, branches, acceptors, pool):
    """Ballot 0's commit reached acceptor1 only, then the first coordinator died. A
    majority of the two others alone would abort; one with acceptor1 in it must commit."""
    branches.answer("prepare", "redpacket", lose_two_acceptors_after_preparing(acceptors))
    txn = begun(log)
    assert paxos_driver(log, branches, acceptors, pool, "coordinator-a").run(txn).status == (
        "preparing"
    )
    acceptors[1].down = False  # acceptor3 stays down: the majority is acceptor1 + acceptor2

    second = paxos_driver(log, branches, acceptors, pool, "coordinator-b")
    log.now += TIMEOUT_S + 1
    recovery(log, branches, second).finish_in_doubt()

    assert log.status(txn.gtid) == "committed"
    assert chosen_by_acceptors(acceptors, txn.gtid) == {COMMIT}
    assert {a.accepted(txn.gtid) for a in acceptors[:2]} == {(1, "coordinator-b", COMMIT)}
    assert sorted(n for op, n in branches.ops(txn.gtid) if op == "commit") == sorted(NAMES)
    assert ("acceptor1", "promise", "ok") in ops(log, txn.gtid)


def test_a_late_ballot_zero_after_a_takeover_is_refused(log, branches, acceptors, pool):
    """Recovery aborted a stalled transaction at ballot 1; the first coordinator wakes up
    and proposes commit at ballot 0: refused, and it follows the log."""
    driver = paxos_driver(log, branches, acceptors, pool, "coordinator-a")
    rescuer = paxos_driver(log, branches, acceptors, pool, "coordinator-b")

    def stalled_past_the_lease(op: str, name: str, gtid: str):
        log.now += TIMEOUT_S + 1
        recovery(log, branches, rescuer).finish_in_doubt()
        return ok(name, op)

    branches.answer("prepare", "inventory", stalled_past_the_lease)
    txn = begun(log)
    outcome = driver.run(txn)
    assert (outcome.status, outcome.reason) == ("aborted", "timeout")
    assert chosen_by_acceptors(acceptors, txn.gtid) == {ABORT}
    nacks = [e for e in ops(log, txn.gtid) if e[1:] == ("accept", "nack")]
    assert len(nacks) >= 2  # a majority refused ballot 0: the round stops there


def duel(members: Acceptors, instance: str, proposers: dict[str, str]) -> dict[str, str | None]:
    """Every proposer takes the instance over at once, each on its thread: what each learned."""
    learned: dict[str, str | None] = {}
    start = threading.Barrier(len(proposers))

    def propose(name: str, value: str) -> None:
        start.wait()
        learned[name] = members.take_over(instance, name, value).value

    threads = [threading.Thread(target=propose, args=p) for p in proposers.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return learned


def test_duelling_proposers_never_choose_two_values(log, acceptors, pool):
    """Proposers with opposite values race over many instances in threads: each instance
    ends with at most one value chosen, and every proposer that learned one learned it."""
    members = group(acceptors, pool)
    proposers = {"p1": COMMIT, "p2": ABORT, "p3": COMMIT, "p4": ABORT}
    for n in range(40):
        instance = f"gtx-duel-{n}"
        learned = duel(members, instance, proposers)
        values = {v for v in learned.values() if v is not None}
        assert len(values) <= 1, (instance, learned)
        assert chosen_by_acceptors(acceptors, instance) <= values, (instance, learned)


def test_resolve_of_a_gtid_the_log_never_heard_of_decides_it_by_paxos(
    log, branches, acceptors, pool
):
    driver = paxos_driver(log, branches, acceptors, pool)
    txn = driver.resolve("gtx-never-begun")
    assert txn is not None and (txn.status, txn.reason) == ("aborting", "timeout")
    assert chosen_by_acceptors(acceptors, "gtx-never-begun") == {ABORT}
    late = driver.acceptors.propose_first("gtx-never-begun", "coordinator-a", COMMIT)
    assert late.value is None  # a ballot 0 arriving after it is refused everywhere


def test_the_sweep_gives_a_lost_log_entry_back_and_recovery_finishes_it(
    log, branches, acceptors, pool
):
    """The first coordinator got commit chosen, then it and its log entry vanished; a
    second coordinator finds the instance at the acceptors and finishes it."""
    first = paxos_driver(log, branches, acceptors, pool, "coordinator-a")
    txn = begun(log)
    registered, _ = first.acceptors.register(txn.gtid, NAMES)
    assert registered
    assert first.acceptors.propose_first(txn.gtid, "coordinator-a", COMMIT).value == COMMIT
    del log.txns[txn.gtid]

    second = paxos_driver(log, branches, acceptors, pool, "coordinator-b")
    assert second.sweep() == 0, "younger than the lease: maybe still in flight"
    log.now += TIMEOUT_S + 1
    assert second.sweep() == 1
    assert log.status(txn.gtid) == "committing"
    assert {b.name for b in log.txns[txn.gtid].branches} == set(NAMES)
    log.now += 0.1  # its lease ran out as it was written back
    recovery(log, branches, second).finish_in_doubt()
    assert log.status(txn.gtid) == "committed"
    assert sorted(n for op, n in branches.ops(txn.gtid) if op == "commit") == sorted(NAMES)

    assert second.sweep() == 0
    assert all(a.decided.get(txn.gtid) == COMMIT for a in acceptors)


def test_orphaned_branches_of_a_lost_paxos_transaction_follow_paxos_not_presumed_abort(
    log, branches, acceptors, pool
):
    """Branches prepared long ago whose gtid the log lost: a paxos one is given back to the
    log as the acceptors decided it (commit); a gtid no acceptor knows is rolled back."""
    first = paxos_driver(log, branches, acceptors, pool, "coordinator-a")
    txn = begun(log)
    assert first.acceptors.register(txn.gtid, NAMES)[0]
    assert first.acceptors.propose_first(txn.gtid, "coordinator-a", COMMIT).value == COMMIT
    del log.txns[txn.gtid]
    lost_2pc = "gtx-2pc-begin-lost"
    branches.prepared_by_name = {
        n: [{"gtid": txn.gtid, "age_s": 60.0}, {"gtid": lost_2pc, "age_s": 60.0}] for n in NAMES
    }

    second = paxos_driver(log, branches, acceptors, pool, "coordinator-b")
    recovery(log, branches, second).resolve_orphans()

    assert sorted(n for op, n in branches.ops(txn.gtid) if op == "commit") == sorted(NAMES)
    assert ("rollback", "inventory") not in branches.ops(txn.gtid)
    assert sorted(n for op, n in branches.ops(lost_2pc) if op == "rollback") == sorted(NAMES)


def test_orphans_wait_while_too_few_acceptors_answer_to_tell(log, branches, acceptors, pool):
    acceptors[0].down = acceptors[1].down = True
    branches.prepared_by_name = {"inventory": [{"gtid": "gtx-who-knows", "age_s": 60.0}]}
    driver = paxos_driver(log, branches, acceptors, pool)
    assert recovery(log, branches, driver).resolve_orphans() == 0
    assert branches.ops("gtx-who-knows") == []
