"""In-memory fakes of the coordinator's log and branches, fresh for every test."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.unit.fakes import FakeBranches, FakeTxnLog


@pytest.fixture
def log() -> FakeTxnLog:
    return FakeTxnLog()


@pytest.fixture
def branches() -> FakeBranches:
    return FakeBranches()


@pytest.fixture(scope="module")
def pool() -> Iterator[ThreadPoolExecutor]:
    """The threads a driver calls its branches (and paxos its acceptors) on."""
    with ThreadPoolExecutor(max_workers=16) as executor:
        yield executor
