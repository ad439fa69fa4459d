"""Mode 3pc's pure parts: what a repeated or late call votes, and its settings (the refusal
where it is off: tests/integration/test_threepc_branch.py; the audit's verdict on a split
outcome: test_audit.py)."""

from __future__ import annotations

import pytest

from paxkit.config import load_settings
from paxkit.threepc import Found, repeated_vote

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("found", "cancommit", "precommit"),
    [
        (None, (False, "aborted"), (False, "aborted")),  # no CanCommit came
        (Found("uncertain"), (True, None), (False, "aborted")),
        (Found("uncertain", precommitted=True), (True, None), (True, None)),
        (Found("uncertain", expired=True), (False, "timeout"), (False, "timeout")),
        (Found("committed"), (True, None), (True, None)),
        (Found("committed", by_timeout=True), (True, None), (True, None)),
        (Found("aborted"), (False, "aborted"), (False, "aborted")),
        (Found("aborted", by_timeout=True), (False, "timeout"), (False, "timeout")),
    ],
)
def test_a_repeated_call_answers_as_the_branch_stands(found, cancommit, precommit):
    """A PreCommit acks only a branch that is prepared or committed: an ack promises that."""
    for is_precommit, expected in ((False, cancommit), (True, precommit)):
        vote = repeated_vote(found, precommit=is_precommit)
        assert (vote.yes, vote.reason) == expected


def test_the_mode_is_off_unless_enabled_and_its_timeouts_are_settings(monkeypatch):
    for name in ("MODE", "UNCERTAIN_TIMEOUT_S", "PRECOMMIT_TIMEOUT_S"):
        monkeypatch.delenv(f"PAXMART_3PC_{name}", raising=False)
    defaults = load_settings()
    assert defaults.threepc_mode is False
    assert defaults.branch_timeout_s < defaults.threepc_uncertain_timeout_s
    assert defaults.txn_timeout_s < defaults.threepc_precommit_timeout_s
    monkeypatch.setenv("PAXMART_3PC_MODE", "1")
    monkeypatch.setenv("PAXMART_3PC_UNCERTAIN_TIMEOUT_S", "4.5")
    monkeypatch.setenv("PAXMART_3PC_PRECOMMIT_TIMEOUT_S", "9")
    enabled = load_settings()
    assert enabled.threepc_mode is True
    assert (enabled.threepc_uncertain_timeout_s, enabled.threepc_precommit_timeout_s) == (4.5, 9)
