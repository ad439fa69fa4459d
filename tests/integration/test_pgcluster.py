"""The project's Postgres cluster supports two-phase commit for real."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg2
import pytest

from infra.pgcluster import ClusterInfo, ensure_cluster
from paxkit.config import load_settings
from paxkit.migrate import drop_database, ensure_database

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster() -> ClusterInfo:
    return ensure_cluster(load_settings())


@pytest.fixture()
def scratch_url(cluster: ClusterInfo) -> Iterator[str]:
    """A temporary database, dropped afterwards (with any prepared transaction left in it)."""
    url = f"postgresql://postgres@{cluster.host}:{cluster.port}/paxmart_scratch_{uuid.uuid4().hex[:8]}"
    ensure_database(url)
    yield url
    drop_database(url)


def _query(url: str, statement: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    conn = psycopg2.connect(url, connect_timeout=5)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def test_cluster_allows_prepared_transactions(cluster: ClusterInfo) -> None:
    assert cluster.max_prepared_transactions > 0
    rows = _query(cluster.dsn, "SHOW max_prepared_transactions")
    assert int(str(rows[0][0])) == cluster.max_prepared_transactions


def test_prepare_then_commit_prepared_round_trip(scratch_url: str) -> None:
    gid = f"paxmart-test-{uuid.uuid4().hex}"
    _query(scratch_url, "CREATE TABLE ledger (id int PRIMARY KEY)")
    _query(scratch_url, "BEGIN; INSERT INTO ledger VALUES (1); PREPARE TRANSACTION %s", (gid,))

    prepared = _query(scratch_url, "SELECT gid FROM pg_prepared_xacts WHERE gid = %s", (gid,))
    assert prepared == [(gid,)]
    assert _query(scratch_url, "SELECT id FROM ledger") == []

    _query(scratch_url, "COMMIT PREPARED %s", (gid,))

    assert _query(scratch_url, "SELECT gid FROM pg_prepared_xacts WHERE gid = %s", (gid,)) == []
    assert _query(scratch_url, "SELECT id FROM ledger") == [(1,)]
