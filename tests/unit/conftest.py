"""In-memory fakes of the coordinator's log and branches, fresh for every test."""

from __future__ import annotations

import pytest

from tests.unit.fakes import FakeBranches, FakeTxnLog


@pytest.fixture
def log() -> FakeTxnLog:
    return FakeTxnLog()


@pytest.fixture
def branches() -> FakeBranches:
    return FakeBranches()
