"""Test wiring: the suite runs against its own databases, ports and Redis db.

Unit tests use none of these fixtures; integration and e2e tests get the project's own
Postgres cluster (with max_prepared_transactions), freshly migrated and seeded.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import pytest
import redis

from paxkit.config import Settings, load_settings
from paxkit.db import Database, make_engine
from paxkit.messaging import Topology, delete_topology

# PAXMART_TEST_SLOT=N runs a second suite beside this one (its own ports, databases,
# Redis db and broker namespace); set PAXMART_PG_PORT too when it runs from another checkout.
SLOT = int(os.environ.get("PAXMART_TEST_SLOT", "0"))
PORT_BASE = 18000 + 100 * SLOT

TEST_ENV = {
    "PAXMART_DB_PREFIX": f"paxmart_test{SLOT or ''}_",
    "PAXMART_REDIS_URL": f"redis://127.0.0.1:6379/{15 - SLOT}",
    "PAXMART_ADMIN_TOKEN": "test-admin-token",
    "PAXMART_SERVICE_TOKEN": "test-service-token",
    "PAXMART_AUTH_SIGNING_KEY": "test-auth-signing-key-for-the-suite-only-0123456789",
    "PAXMART_FAULTS": "1",
    "PAXMART_TXN_TIMEOUT_S": "4",
    "PAXMART_BRANCH_TIMEOUT_S": "2",
    "PAXMART_HTTP_TIMEOUT_S": "3",
    "PAXMART_RECOVERY_INTERVAL_S": "0.5",
    "PAXMART_RECOVERY_HORIZON_S": "8",
    "PAXMART_NOTIFY_SCHEDULE_S": "0.2,0.4,0.8,1.6",
    "PAXMART_LOCK_TIMEOUT_MS": "1500",
    # Mode 3pc is on here (unlike naive): the suite runs it through the same order,
    # contention and fault tests as 2pc; its timeouts sit above the transaction lease.
    "PAXMART_3PC_MODE": "1",
    "PAXMART_3PC_UNCERTAIN_TIMEOUT_S": "6",
    "PAXMART_3PC_PRECOMMIT_TIMEOUT_S": "10",
    "PAXMART_GATEWAY_PORT": str(PORT_BASE),
    "PAXMART_COORDINATOR_PORT": str(PORT_BASE + 10),
    "PAXMART_ORDER_PORT": str(PORT_BASE + 11),
    "PAXMART_INVENTORY_PORT": str(PORT_BASE + 12),
    "PAXMART_COUPON_PORT": str(PORT_BASE + 13),
    "PAXMART_REDPACKET_PORT": str(PORT_BASE + 14),
}


LAYERS = ("unit", "integration", "e2e", "fuzz")


def pytest_configure(config: pytest.Config) -> None:
    for key, value in TEST_ENV.items():
        os.environ[key] = value


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run unit, then integration, then e2e, then fuzz tests, each layer marked with its name.

    The e2e stack runs background recovery over the test databases, so the integration
    tests, which stage crashes by hand, must be done before it starts."""

    def layer(item: pytest.Item) -> int:
        parts = item.path.relative_to(item.config.rootpath / "tests").parts
        return LAYERS.index(parts[0]) if parts[0] in LAYERS else len(LAYERS)

    for item in items:
        name = item.path.relative_to(item.config.rootpath / "tests").parts[0]
        if name in LAYERS:
            item.add_marker(name)
    items.sort(key=layer)


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def fresh_databases(settings: Settings) -> Settings:
    """The project cluster running, and every test database dropped, migrated and seeded."""
    from infra.pgcluster import ensure_cluster
    from paxkit.migrate import migrate_all

    ensure_cluster(settings)
    migrate_all(settings, reset=True)
    # Messages left by an interrupted run would name orders these databases never had.
    delete_topology(settings.amqp_url, Topology.of(settings))
    return settings


@contextmanager
def database_handles(settings: Settings, names: Iterable[str]) -> Iterator[dict[str, Database]]:
    handles = {name: Database(make_engine(settings.db_urls[name], pool_size=4)) for name in names}
    try:
        yield handles
    finally:
        for handle in handles.values():
            handle.dispose()


@pytest.fixture(scope="session")
def dbs(fresh_databases: Settings) -> Iterator[dict[str, Database]]:
    with database_handles(fresh_databases, fresh_databases.components) as handles:
        yield handles


@pytest.fixture(scope="session")
def acceptor_dbs(fresh_databases: Settings) -> Iterator[dict[str, Database]]:
    """Mode paxos's acceptor databases."""
    with database_handles(fresh_databases, fresh_databases.acceptors) as handles:
        yield handles


@pytest.fixture(scope="session")
def redis_client(settings: Settings) -> redis.Redis:
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=2)
    client.flushdb()
    return client
