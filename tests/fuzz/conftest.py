"""A stack of the fuzzer's own, and what the fuzzer counts.

The fuzzer writes through every route, the internal ones included (prepared branches,
barrier rows, orders of any mode), so it runs on a stack of its own (its own ports,
databases, Redis db and broker namespace) that is dropped afterwards, and never on the
suite's stack, whose audit the e2e layer requires clean.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import requests

from infra.launcher import Stack
from paxkit.config import Settings
from paxkit.db import Database
from tests.conftest import SLOT, TEST_ENV
from tests.e2e.conftest import ADMIN, SERVICE, own_stack_and_database, stack_ports
from tests.helpers import wait_until
from tests.integration.gateway_kit import reset_control

PREFIX = f"paxmart_test{SLOT or ''}_fuzz_"
PORT_OFFSET = 80


def fuzz_env() -> dict[str, str]:
    """The suite's settings on the fuzzer's own resources, with every optional mode on so
    that every described route is served."""
    return {
        **TEST_ENV,
        **stack_ports(PORT_OFFSET),
        "PAXMART_DB_PREFIX": PREFIX,
        "PAXMART_REDIS_URL": f"redis://127.0.0.1:6379/{14 - SLOT}",
        "PAXMART_NAIVE_MODE": "1",
        "PAXMART_FAULTS": "0",
    }


@dataclass(frozen=True)
class Report:
    """How many requests the fuzzer generated, per suite and per operation."""

    by_operation: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.by_operation.values())

    @property
    def by_suite(self) -> dict[str, int]:
        suites: Counter[str] = Counter()
        for key, count in self.by_operation.items():
            suites[key.split(" ", 1)[0]] += count
        return dict(sorted(suites.items()))

    def as_json(self) -> dict[str, object]:
        return {"total": self.total, "by_suite": self.by_suite, "by_operation": self.by_operation}


@dataclass
class FuzzStack:
    """The running stack, and the requests the fuzzer generated per suite and operation."""

    stack: Stack
    gateway_db: Database
    http: requests.Session = field(default_factory=requests.Session)
    generated: Counter[str] = field(default_factory=Counter)

    def url(self, component: str) -> str:
        return self.stack.url(component)

    def restore_control_plane(self) -> None:
        """Undo what a fuzzed admin change did (switches, level, rate limits) in the
        gateway's own database, not through routes a fuzzed rule may limit, and wait until
        the gateway has reloaded it: the next operations meet a shop that is open."""
        reset_control(self.gateway_db)
        row = self.gateway_db.fetch_one("SELECT version FROM control_state WHERE id = 1")
        version = int(row["version"]) if row else 0
        wait_until(
            lambda: self.gateway_version() >= version, timeout_s=10, what="the control reload"
        )

    def gateway_version(self) -> int:
        answer = self.http.get(f"{self.url('gateway')}/admin/switches", headers=ADMIN, timeout=10)
        return int(answer.json()["version"]) if answer.status_code == 200 else -1

    def report(self) -> Report:
        return Report(dict(sorted(self.generated.items())))


@pytest.fixture(scope="session")
def fuzz(fresh_databases: Settings) -> Iterator[FuzzStack]:
    log_dir = fresh_databases.state_dir / "test-logs-fuzz"
    with own_stack_and_database(fuzz_env(), log_dir, "gateway") as (stack, gateway_db):
        running = FuzzStack(stack, gateway_db)
        yield running
        report = running.report().as_json()
        (fresh_databases.state_dir / "fuzz-requests.json").write_text(json.dumps(report, indent=2))


__all__ = ["ADMIN", "SERVICE", "FuzzStack"]
