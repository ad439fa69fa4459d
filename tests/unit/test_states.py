"""The global transaction state machine and reason selection, no servers."""

from __future__ import annotations

import pytest

from coordinator.states import (
    STATUSES,
    IllegalTransition,
    decision_of,
    is_durable,
    next_status,
    overall_reason,
)


def test_commit_path():
    assert next_status("preparing", "commit") == "committing"
    assert next_status("committing", "done") == "committed"


def test_message_path():
    assert next_status("submitted", "applied") == "committed"
    assert next_status("submitted", "abort") == "aborting"


def test_only_a_commit_decision_and_3pc_precommitting_wait_for_the_disk():
    assert [s for s in STATUSES if is_durable(s)] == ["precommitting", "committing"]


def test_3pc_path():
    assert next_status("preparing", "precommit") == "precommitting"
    assert next_status("precommitting", "commit") == "committing"
    assert next_status("precommitting", "abort") == "aborting"


def test_abort_path():
    assert next_status("preparing", "abort") == "aborting"
    assert next_status("aborting", "done") == "aborted"


@pytest.mark.parametrize(
    ("status", "event"),
    [
        ("committing", "abort"),
        ("aborting", "commit"),
        ("committed", "done"),
        ("aborted", "commit"),
        ("preparing", "done"),
        ("submitted", "done"),
        ("submitted", "commit"),
        ("committing", "applied"),
        ("preparing", "applied"),  # a msg transaction begins submitted
        ("committed", "applied"),
        ("committing", "precommit"),
        ("aborting", "precommit"),
        ("precommitting", "done"),
        ("precommitting", "precommit"),
        ("submitted", "precommit"),
    ],
)
def test_a_decision_is_never_reversed(status, event):
    with pytest.raises(IllegalTransition):
        next_status(status, event)


def test_phase_two_follows_the_decision():
    assert decision_of("committing") == decision_of("committed") == "commit"
    assert decision_of("aborting") == decision_of("aborted") == "abort"
    with pytest.raises(IllegalTransition):
        decision_of("preparing")
    with pytest.raises(IllegalTransition):
        decision_of("precommitting")  # a missing ack still aborts


def test_the_most_specific_reason_wins():
    assert overall_reason([]) is None
    assert overall_reason(["timeout", "insufficient_balance"]) == "insufficient_balance"
    assert overall_reason(["aborted", "out_of_stock", "coupon_unavailable"]) == "out_of_stock"
    assert overall_reason(["something_new"]) == "something_new"
