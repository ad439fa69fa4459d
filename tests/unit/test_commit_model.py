"""The commit-protocol explorer's verdicts, as the theory has them, and its ability to
fail: a 2PC participant that aborts on timeout after voting yes must be caught, and so must
Paxos Commit once a majority of its acceptors is down."""

from __future__ import annotations

import pytest

from paxkit import commit_model
from paxkit.commitcheck.classic import ThreePhaseCommit, TwoPhaseCommit
from paxkit.commitcheck.explorer import Trace, explore
from paxkit.commitcheck.paxos_commit import PaxosCommit

pytestmark = pytest.mark.unit


def ends_split(trace: Trace | None) -> bool:
    assert trace is not None
    outcomes = {what for _, what in trace.outcomes}
    return {"committed", "aborted"} <= outcomes


def test_2pc_never_disagrees_but_blocks_when_its_coordinator_crashes():
    report = explore(TwoPhaseCommit())
    assert report.complete and report.consistent
    assert report.blocking is not None
    assert "crash coordinator" in report.blocking.steps
    assert ("p1", "in doubt") in report.blocking.outcomes


def test_2pc_whose_prepared_participant_aborts_on_timeout_is_caught():
    report = explore(TwoPhaseCommit(abort_on_timeout=True))
    assert not report.consistent
    assert ends_split(report.inconsistency)


def test_3pc_never_blocks_but_a_partition_makes_it_commit_and_abort():
    report = explore(ThreePhaseCommit())
    assert report.complete and not report.can_block
    assert ends_split(report.inconsistency)
    assert report.inconsistency is not None
    steps = report.inconsistency.steps
    assert "partition coordinator|p1" in steps and "p1 timeout: commits" in steps


def test_paxos_commit_neither_disagrees_nor_blocks_with_a_majority_of_acceptors():
    report = explore(PaxosCommit())
    assert report.complete
    assert report.consistent and not report.can_block


def test_paxos_commit_blocks_once_a_majority_of_acceptors_is_down():
    report = explore(PaxosCommit(acceptor_crashes=2, coordinator_fails=False), max_faults=2)
    assert report.consistent and report.blocking is not None
    assert {"crash a1", "crash a2"} <= set(report.blocking.steps)


def test_the_cli_prints_the_3pc_counter_example_one_step_a_line(capsys):
    assert commit_model.main(["3pc"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("3pc: INCONSISTENT, never blocks")
    assert any(line.endswith("coordinator -> p1: PreCommit (p1 pre-commits)") for line in printed)
    assert any(line.endswith("p1 timeout: commits") for line in printed)


def test_the_cli_checks_all_three_protocols_unless_told_which():
    assert commit_model.parse_args([]).protocols == ["2pc", "3pc", "paxos"]
    assert commit_model.parse_args(["paxos", "--max-faults", "2"]).max_faults == 2
    with pytest.raises(SystemExit):
        commit_model.parse_args(["4pc"])
