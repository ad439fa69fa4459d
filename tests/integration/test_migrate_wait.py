"""`paxkit.migrate --wait`: what a Kubernetes pod's initContainer runs so that it starts
only once the migrate Job has brought its databases to the schema of its image. Against
the project's Postgres, on a scratch database of the test's own."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest

from paxkit.config import REPO_ROOT, Settings
from paxkit.migrate import (
    apply_migrations,
    drop_database,
    ensure_database,
    migration_dirs,
    pending_migrations,
    wait_for_migrations,
)

pytestmark = pytest.mark.integration

DATABASE = "inventory"


@pytest.fixture
def scratch(fresh_databases: Settings) -> Iterator[tuple[Settings, str]]:
    """Settings whose inventory database is a scratch one, absent at the start."""
    url = f"{fresh_databases.db_urls[DATABASE]}_waitscratch"
    drop_database(url)
    yield replace(fresh_databases, db_urls={**fresh_databases.db_urls, DATABASE: url}), url
    drop_database(url)


def test_wait_names_a_missing_database_then_its_pending_migrations_then_nothing(scratch):
    settings, url = scratch
    assert "does not exist" in wait_for_migrations(settings, [DATABASE], 0.0)[DATABASE]
    ensure_database(url)
    every = pending_migrations(url, migration_dirs(DATABASE))
    assert every, "an empty database has every migration pending"
    assert wait_for_migrations(settings, [DATABASE], 0.0) == {
        DATABASE: f"{len(every)} migrations pending, first {every[0]}"
    }
    apply_migrations(url, migration_dirs(DATABASE))
    assert pending_migrations(url, migration_dirs(DATABASE)) == []
    assert wait_for_migrations(settings, [DATABASE], 0.0) == {}


def test_a_waiter_returns_as_soon_as_another_process_has_migrated(scratch):
    settings, url = scratch
    ensure_database(url)
    result: list[dict[str, str]] = []
    waiter = threading.Thread(
        target=lambda: result.append(wait_for_migrations(settings, [DATABASE], 60.0, 0.05))
    )
    started = time.monotonic()
    waiter.start()
    apply_migrations(url, migration_dirs(DATABASE))
    waiter.join(60.0)
    assert result == [{}]
    assert time.monotonic() - started < 30.0


def test_wait_refuses_a_database_the_stack_does_not_have(scratch):
    settings, _ = scratch
    with pytest.raises(KeyError, match="nosuch"):
        wait_for_migrations(settings, ["nosuch"], 0.0)


def test_the_command_exits_1_until_the_database_is_migrated_and_0_after(scratch):
    _, url = scratch
    env = {**os.environ, f"PAXMART_{DATABASE.upper()}_DB_URL": url}
    command = [sys.executable, "-m", "paxkit.migrate", "--wait", DATABASE, "--timeout", "0"]

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
        )

    before = run()
    assert before.returncode == 1
    assert f"{DATABASE}" in before.stderr and "not migrated" in before.stderr
    ensure_database(url)
    apply_migrations(url, migration_dirs(DATABASE))
    assert run().returncode == 0
