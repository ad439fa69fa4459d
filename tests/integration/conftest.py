"""Fixtures for integration tests: scratch databases a test module owns alone."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from paxkit.config import Settings
from paxkit.db import Database, make_engine
from paxkit.migrate import apply_migrations, drop_database, ensure_database, migration_dirs
from tests.integration.gateway_kit import (
    FakeUpstream,
    OwnRedis,
    RunningGateway,
    gateway_settings,
    isolated_options,
    reset_control,
    running_gateway,
    serving,
)


@pytest.fixture(scope="module")
def scratch_db(fresh_databases: Settings) -> Iterator[Callable[[str], Database]]:
    """Make a freshly migrated and seeded copy of a service's database, dropped afterwards."""
    made: list[tuple[str, Database]] = []

    def make(service: str) -> Database:
        url = f"{fresh_databases.db_urls[service]}_scratch"
        drop_database(url)
        ensure_database(url)
        apply_migrations(url, migration_dirs(service))
        db = Database(make_engine(url, pool_size=4))
        made.append((url, db))
        return db

    yield make
    for url, db in made:
        db.dispose()
        drop_database(url)


# ---------------------------------------------------------------- gateway (gateway_kit.py)


@pytest.fixture(scope="module")
def gateway_db(scratch_db: Callable[[str], Database]) -> Database:
    """A gateway control database of the module's own (the e2e stack keeps the shared one)."""
    return scratch_db("gateway")


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    """The stand-in for every service behind the gateway, served on loopback."""
    upstream = FakeUpstream()
    with serving(upstream.app) as url:
        upstream.url = url
        yield upstream


@pytest.fixture
def gw_settings(settings: Settings, gateway_db: Database, fake: FakeUpstream) -> Settings:
    """Settings of a gateway in front of the fake, on a clean control plane."""
    reset_control(gateway_db)
    url = gateway_db.engine.url.render_as_string(hide_password=False)
    return gateway_settings(settings, fake.url, db_urls={**settings.db_urls, "gateway": url})


@pytest.fixture
def gw(gw_settings: Settings) -> Iterator[RunningGateway]:
    """A gateway with default options (its own Redis namespace, no warm-up)."""
    with running_gateway(gw_settings, isolated_options()) as running:
        yield running


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    """A redis-server of the test's own, to stop or pause."""
    server = OwnRedis(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def on_own_redis(gw_settings: Settings, own_redis: OwnRedis) -> Settings:
    return replace(gw_settings, redis_url=own_redis.url)
