"""The 2PC, TCC, saga and 3PC drivers and recovery against in-memory fakes of the log and
the branches: every decision, every completion, every takeover, no servers."""

from __future__ import annotations

import inspect
import itertools

import pytest

from coordinator.branches import Branches
from coordinator.drivers import Driver, Saga, Tcc, ThreePhaseCommit, TwoPhaseCommit
from coordinator.log import TxnLog
from coordinator.ports import Branch, BranchClient, BranchResult, TransactionLog, Txn
from coordinator.recovery import Recovery
from paxkit.faults import Faults
from tests.unit.fakes import FakeBranches, FakeTxnLog, no, ok, unavailable

TIMEOUT_S = 4.0
NAMES = ("inventory", "coupon", "redpacket")
_ids = itertools.count(1)


def driver(kind: type[Driver], log: FakeTxnLog, branches: FakeBranches, pool) -> Driver:
    return kind(log, branches, Faults("coordinator", None), pool, TIMEOUT_S, retry_delay_s=0.5)


def begun(log: FakeTxnLog, mode: str, names: tuple[str, ...] = NAMES) -> Txn:
    gtid = f"gtx-unit-{next(_ids)}"
    parts = [Branch(name, {"order_id": f"ord-{gtid}"}) for name in names]
    txn = log.begin(gtid, mode, parts, TIMEOUT_S, durable=mode != "2pc")
    assert txn is not None
    return txn


def recovery(log: FakeTxnLog, branches: FakeBranches, drivers: list[Driver]) -> Recovery:
    by_mode = {d.mode: d for d in drivers}
    return Recovery(log, branches, by_mode, horizon_s=10, lease_s=TIMEOUT_S, base_delay_s=0.5)


@pytest.mark.parametrize(
    ("protocol", "implementations"),
    [(TransactionLog, (TxnLog, FakeTxnLog)), (BranchClient, (Branches, FakeBranches))],
)
def test_the_fakes_have_the_interface_of_the_real_thing(protocol, implementations):
    members = [m for m in vars(protocol) if not m.startswith("_")]
    assert members
    for member in members:
        wanted = list(inspect.signature(getattr(protocol, member)).parameters)
        for implementation in implementations:
            got = list(inspect.signature(getattr(implementation, member)).parameters)
            assert got == wanted, (implementation.__name__, member)


def test_2pc_all_yes_commits_every_branch_with_a_durable_decision(log, branches, pool):
    txn = begun(log, "2pc")
    outcome = driver(TwoPhaseCommit, log, branches, pool).run(txn)
    assert (outcome.status, outcome.reason) == ("committed", None)
    assert log.status(txn.gtid) == "committed"
    assert sorted(branches.ops()) == sorted(
        [("prepare", n) for n in NAMES] + [("commit", n) for n in NAMES]
    )
    assert log.durable == [(txn.gtid, "committing")]
    assert [(e.branch, e.op, e.outcome) for e in log.timeline[txn.gtid]].count(
        ("coupon", "commit", "ok")
    ) == 1


def test_2pc_a_no_vote_rolls_every_branch_back_with_its_reason(log, branches, pool):
    branches.answer("prepare", "coupon", no("coupon_unavailable"))
    branches.answer("prepare", "inventory", no("timeout"))
    txn = begun(log, "2pc")
    outcome = driver(TwoPhaseCommit, log, branches, pool).run(txn)
    assert (outcome.status, outcome.reason) == ("aborted", "coupon_unavailable")
    assert log.txns[txn.gtid].reason == "coupon_unavailable"
    assert sorted(n for op, n in branches.ops() if op == "rollback") == sorted(NAMES)
    assert log.durable == []  # presumed abort: an abort decision needs no fsync


def test_2pc_commit_not_reached_is_postponed_and_recovery_finishes_it(log, branches, pool):
    branches.answer("commit", "redpacket", unavailable())
    two_pc = driver(TwoPhaseCommit, log, branches, pool)
    txn = begun(log, "2pc")
    assert two_pc.run(txn).status == "committed"  # decided: the outcome is known
    assert log.status(txn.gtid) == "committing"
    assert log.lease_left(txn.gtid) == 0.5

    log.now += 1
    assert recovery(log, branches, [two_pc]).finish_in_doubt() == 1

    assert log.status(txn.gtid) == "committed"
    assert branches.ops(txn.gtid).count(("commit", "redpacket")) == 2
    assert ("prepare", "redpacket") not in branches.ops(txn.gtid)[3:]


def test_a_driver_that_lost_the_decision_to_recovery_follows_the_log(log, branches, pool):
    """The forward phase was so slow that recovery aborted the transaction meanwhile."""
    two_pc = driver(TwoPhaseCommit, log, branches, pool)

    def slow_prepare(op: str, name: str, gtid: str):
        log.move(gtid, "preparing", "abort", reason="timeout")
        return ok(name, op)

    branches.answer("prepare", "inventory", slow_prepare)
    txn = begun(log, "2pc")
    outcome = two_pc.run(txn)
    assert (outcome.status, outcome.reason) == ("aborted", "timeout")
    assert log.status(txn.gtid) == "aborted"
    assert {op for op, _ in branches.ops(txn.gtid)} == {"prepare", "rollback"}


def test_a_2pc_begin_lost_in_a_crash_is_presumed_aborted(log, branches, pool):
    log.lost_begins = True
    txn = begun(log, "2pc")
    outcome = driver(TwoPhaseCommit, log, branches, pool).run(txn)
    assert (outcome.status, outcome.reason) == ("aborted", "timeout")
    assert log.status(txn.gtid) == "aborted"
    assert {op for op, _ in branches.ops(txn.gtid)} == {"prepare", "rollback"}


def test_tcc_confirms_after_every_try_and_cancels_all_after_a_failed_one(log, branches, pool):
    tcc = driver(Tcc, log, branches, pool)
    good = begun(log, "tcc")
    assert tcc.run(good).status == "committed"
    assert sorted(branches.ops(good.gtid)) == sorted(
        [("try", n) for n in NAMES] + [("confirm", n) for n in NAMES]
    )
    branches.answer("try", "redpacket", no("insufficient_balance"))
    bad = begun(log, "tcc")
    outcome = tcc.run(bad)
    assert (outcome.status, outcome.reason) == ("aborted", "insufficient_balance")
    # Every branch is cancelled, the one whose Try failed too (its barrier makes it null).
    assert sorted(n for op, n in branches.ops(bad.gtid) if op == "cancel") == sorted(NAMES)


def test_saga_stops_at_the_first_failed_action_and_compensates_in_reverse(log, branches, pool):
    branches.answer("action", "coupon", no("coupon_unavailable"))
    saga = driver(Saga, log, branches, pool)
    txn = begun(log, "saga")
    outcome = saga.run(txn)
    assert (outcome.status, outcome.reason) == ("aborted", "coupon_unavailable")
    assert branches.ops(txn.gtid) == [
        ("action", "inventory"),
        ("action", "coupon"),
        ("compensate", "redpacket"),
        ("compensate", "coupon"),
        ("compensate", "inventory"),
    ]


def test_saga_compensation_stops_at_a_failure_and_recovery_resumes_in_order(log, branches, pool):
    branches.answer("action", "redpacket", no("insufficient_balance"))
    branches.answer("compensate", "coupon", unavailable())
    saga = driver(Saga, log, branches, pool)
    txn = begun(log, "saga")
    saga.run(txn)
    assert log.status(txn.gtid) == "aborting"
    assert ("compensate", "inventory") not in branches.ops(txn.gtid)

    log.now += 1
    recovery(log, branches, [saga]).finish_in_doubt()

    assert log.status(txn.gtid) == "aborted"
    assert branches.ops(txn.gtid)[-3:] == [
        ("compensate", "redpacket"),
        ("compensate", "coupon"),
        ("compensate", "inventory"),
    ]


def test_saga_success_needs_no_completion(log, branches, pool):
    txn = begun(log, "saga")
    assert driver(Saga, log, branches, pool).run(txn).status == "committed"
    assert [op for op, _ in branches.ops(txn.gtid)] == ["action"] * 3


def ops_of(branches: FakeBranches, gtid: str, op: str) -> list[str]:
    return sorted(name for o, name in branches.ops(gtid) if o == op)


def test_3pc_all_yes_precommits_then_commits_every_branch(log, branches, pool):
    txn = begun(log, "3pc")
    outcome = driver(ThreePhaseCommit, log, branches, pool).run(txn)
    assert (outcome.status, outcome.reason) == ("committed", None)
    assert log.status(txn.gtid) == "committed"
    phases = [op for op, _ in branches.ops(txn.gtid)]
    assert phases == ["cancommit"] * 3 + ["precommit"] * 3 + ["docommit"] * 3
    # From `precommitting` on, a precommitted branch commits on its own: durable, as the
    # commit decision.
    assert log.durable == [(txn.gtid, "precommitting"), (txn.gtid, "committing")]
    timeline = [(e.op, e.outcome) for e in log.timeline[txn.gtid]]
    assert sorted(timeline) == sorted(
        [(op, "ok") for op in ("cancommit", "precommit", "docommit") for _ in NAMES]
    )


def test_3pc_a_no_at_cancommit_aborts_every_branch_without_a_precommit(log, branches, pool):
    branches.answer("cancommit", "redpacket", no("insufficient_balance"))
    txn = begun(log, "3pc")
    outcome = driver(ThreePhaseCommit, log, branches, pool).run(txn)
    assert (outcome.status, outcome.reason) == ("aborted", "insufficient_balance")
    assert ops_of(branches, txn.gtid, "precommit") == []
    assert ops_of(branches, txn.gtid, "abort") == sorted(NAMES)
    assert log.durable == []


def test_3pc_an_ack_missing_at_precommit_aborts_every_branch(log, branches, pool):
    """The textbook's rule, and what a partition turns into a split: the branches that did
    precommit are sent Abort, which must reach them before their own timeout."""
    branches.answer("precommit", "coupon", no("timeout"))
    txn = begun(log, "3pc")
    outcome = driver(ThreePhaseCommit, log, branches, pool).run(txn)
    assert (outcome.status, outcome.reason) == ("aborted", "timeout")
    assert log.status(txn.gtid) == "aborted"
    assert ops_of(branches, txn.gtid, "abort") == sorted(NAMES)
    assert ops_of(branches, txn.gtid, "docommit") == []
    assert log.durable == [(txn.gtid, "precommitting")]


def test_3pc_an_abort_finding_a_branch_committed_on_its_own_ends_the_transaction(
    log, branches, pool
):
    """Nothing can undo it: the transaction is aborted, and the timeline says what the
    branch did (the audit reports the split)."""
    branches.answer("precommit", "inventory", no("timeout"))
    branches.answer("abort", "inventory", BranchResult("", "", True, None, "committed_by_timeout"))
    txn = begun(log, "3pc")
    assert driver(ThreePhaseCommit, log, branches, pool).run(txn).status == "aborted"
    assert log.status(txn.gtid) == "aborted"
    assert ("inventory", "abort", "ok", "committed_by_timeout") in {
        (e.branch, e.op, e.outcome, e.detail) for e in log.timeline[txn.gtid]
    }


def test_3pc_a_driver_that_lost_the_precommit_phase_to_recovery_follows_the_log(
    log, branches, pool
):
    def slow_ack(op: str, name: str, gtid: str) -> BranchResult:
        log.move(gtid, "precommitting", "abort", reason="timeout")
        return ok(name, op)

    branches.answer("precommit", "inventory", slow_ack)
    txn = begun(log, "3pc")
    outcome = driver(ThreePhaseCommit, log, branches, pool).run(txn)
    assert (outcome.status, outcome.reason) == ("aborted", "timeout")
    assert ops_of(branches, txn.gtid, "docommit") == []
    assert ops_of(branches, txn.gtid, "abort") == sorted(NAMES)


def stalled_precommitting(log: FakeTxnLog) -> Txn:
    """A 3pc transaction whose driver died after every yes vote, its lease run out."""
    txn = begun(log, "3pc")
    log.move(txn.gtid, "preparing", "precommit", lease_s=TIMEOUT_S)
    log.now += TIMEOUT_S + 1
    return txn


def test_3pc_recovery_resumes_precommit_and_commits_when_every_branch_acks(log, branches, pool):
    three_pc = driver(ThreePhaseCommit, log, branches, pool)
    txn = stalled_precommitting(log)
    assert recovery(log, branches, [three_pc]).finish_in_doubt() == 1
    assert log.status(txn.gtid) == "committed"
    assert [op for op, _ in branches.ops(txn.gtid)] == ["precommit"] * 3 + ["docommit"] * 3


def test_3pc_recovery_aborts_when_a_branch_timed_out_uncertain(log, branches, pool):
    """That branch aborted on its own: the precommitted ones must be aborted too."""
    three_pc = driver(ThreePhaseCommit, log, branches, pool)
    branches.answer("precommit", "redpacket", no("timeout"))
    txn = stalled_precommitting(log)
    recovery(log, branches, [three_pc]).finish_in_doubt()
    assert (log.status(txn.gtid), log.txns[txn.gtid].reason) == ("aborted", "timeout")
    assert ops_of(branches, txn.gtid, "abort") == sorted(NAMES)


def test_3pc_recovery_aborts_a_transaction_stalled_at_cancommit(log, branches, pool):
    three_pc = driver(ThreePhaseCommit, log, branches, pool)
    txn = begun(log, "3pc")
    log.now += TIMEOUT_S + 1
    recovery(log, branches, [three_pc]).finish_in_doubt()
    assert (log.status(txn.gtid), log.txns[txn.gtid].reason) == ("aborted", "timeout")
    assert [op for op, _ in branches.ops(txn.gtid)] == ["abort"] * 3


def test_3pc_an_abort_not_reached_is_retried_by_recovery(log, branches, pool):
    branches.answer("cancommit", "coupon", no("coupon_unavailable"))
    branches.answer("abort", "redpacket", unavailable())
    three_pc = driver(ThreePhaseCommit, log, branches, pool)
    txn = begun(log, "3pc")
    assert three_pc.run(txn).status == "aborted"
    assert log.status(txn.gtid) == "aborting"
    log.now += 1
    recovery(log, branches, [three_pc]).finish_in_doubt()
    assert log.status(txn.gtid) == "aborted"
    assert branches.ops(txn.gtid).count(("abort", "redpacket")) == 2


def test_recovery_aborts_an_undecided_transaction_and_leaves_live_ones(log, branches, pool):
    two_pc = driver(TwoPhaseCommit, log, branches, pool)
    stalled = begun(log, "2pc")
    log.now += TIMEOUT_S + 1
    live = begun(log, "2pc")

    assert recovery(log, branches, [two_pc]).finish_in_doubt() == 1

    assert (log.status(stalled.gtid), log.txns[stalled.gtid].reason) == ("aborted", "timeout")
    assert [op for op, _ in branches.ops(stalled.gtid)] == ["rollback"] * 3
    assert branches.reasons[-1] == "timeout"
    assert log.status(live.gtid) == "preparing"
    assert branches.ops(live.gtid) == []


def test_recovery_commits_a_decided_transaction_whose_driver_died(log, branches, pool):
    two_pc = driver(TwoPhaseCommit, log, branches, pool)
    txn = begun(log, "2pc")
    log.move(txn.gtid, "preparing", "commit", lease_s=0)  # ...and the driver dies here
    log.now += 1
    recovery(log, branches, [two_pc]).finish_in_doubt()
    assert log.status(txn.gtid) == "committed"
    assert [op for op, _ in branches.ops(txn.gtid)] == ["commit"] * 3


def test_recovery_retries_with_growing_delays(log, branches, pool):
    branches.answer("commit", "inventory", *[unavailable()] * 6)
    two_pc = driver(TwoPhaseCommit, log, branches, pool)
    txn = begun(log, "2pc")
    log.move(txn.gtid, "preparing", "commit", lease_s=0)
    ceilings = []
    for _ in range(6):
        log.now += 1000
        recovery(log, branches, [two_pc]).finish_in_doubt()
        ceilings.append(log.txns[txn.gtid].recovery_attempts)
        assert 0.5 <= log.lease_left(txn.gtid) <= min(30.0, 0.5 * 2 ** ceilings[-1])
    assert log.status(txn.gtid) == "committing"
    log.now += 1000
    recovery(log, branches, [two_pc]).finish_in_doubt()
    assert log.status(txn.gtid) == "committed"


def test_orphan_prepared_branches_follow_the_log(log, branches, pool):
    committed, preparing = begun(log, "2pc"), begun(log, "2pc")
    log.move(committed.gtid, "preparing", "commit")
    log.move(committed.gtid, "committing", "done")
    branches.prepared_by_name["inventory"] = [
        {"gtid": committed.gtid, "age_s": 60},
        {"gtid": preparing.gtid, "age_s": 60},
        {"gtid": "gtx-never-logged", "age_s": 60},
        {"gtid": "gtx-young", "age_s": 1},
    ]
    resolved = recovery(log, branches, []).resolve_orphans()
    assert resolved == 2
    assert branches.calls == [
        ("commit", "inventory", committed.gtid),
        ("rollback", "inventory", "gtx-never-logged"),
    ]
