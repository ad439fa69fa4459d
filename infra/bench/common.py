"""What the raw-limit and order benchmarks share: their own ports, databases and Redis db,
the servers they need, the load's shape, and where results go.

The benchmarks run beside a `make up` stack (ports 8000+), the test suite (18000+) and
the gateway benchmark (28000+, `paxmart_bench_*`, Redis db 14) without touching them.
Their ports stay below Linux's ephemeral range (32768+), where an outgoing connection's
local port could already hold the one a component wants to listen on.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import psycopg2

from infra.deps import ensure_rabbitmq, ensure_redis
from infra.pgcluster import ClusterInfo, ensure_cluster
from paxkit.config import REPO_ROOT, Settings, load_settings

log = logging.getLogger(__name__)

TOKEN = "bench-orders-admin-token"
PREFIX = "paxmart_bench_orders_"
BENCH_ENV = {
    "PAXMART_DB_PREFIX": PREFIX,
    "PAXMART_REDIS_URL": "redis://127.0.0.1:6379/13",
    "PAXMART_ADMIN_TOKEN": TOKEN,
    "PAXMART_SERVICE_TOKEN": "bench-orders-service-token",
    "PAXMART_AUTH_SIGNING_KEY": "bench-orders-auth-signing-key-0123456789abcdef",
    "PAXMART_FAULTS": "0",
    # The unsafe no-protocol baseline every mode is compared with (paxkit/naive.py).
    "PAXMART_NAIVE_MODE": "1",
    "PAXMART_GATEWAY_PORT": "26000",
    "PAXMART_COORDINATOR_PORT": "26010",
    "PAXMART_ORDER_PORT": "26011",
    "PAXMART_INVENTORY_PORT": "26012",
    "PAXMART_COUPON_PORT": "26013",
    "PAXMART_REDPACKET_PORT": "26014",
    "PAXMART_TRIVIAL_PORT": "26020",
}
# Closed-loop concurrency of every saturation run (orders, trivial endpoint, raw 4-DB).
CONNECTIONS = 32
RESULTS_DIR = REPO_ROOT / "bench-results"


def prepare_servers() -> tuple[Settings, ClusterInfo]:
    """Bench env in os.environ (so every setting and child sees it); Postgres, Redis, RabbitMQ."""
    os.environ.update(BENCH_ENV)
    settings = load_settings()
    cluster = ensure_cluster(settings)
    ensure_redis(settings)
    ensure_rabbitmq(settings)
    return settings, cluster


def durability(settings: Settings) -> dict[str, str]:
    """The Postgres durability settings in force: the benchmark leaves them at defaults."""
    conn = psycopg2.connect(
        host=settings.pg_host, port=settings.pg_port, user=settings.pg_user, dbname="postgres"
    )
    try:
        with conn.cursor() as cur:
            values = {}
            for name in ("fsync", "synchronous_commit", "full_page_writes", "wal_sync_method"):
                cur.execute(f"SHOW {name}")
                row = cur.fetchone()
                values[name] = str(row[0]) if row else "?"
            return values
    finally:
        conn.close()


def write_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    log.info("wrote %s", path)
    return path


def read_result(name: str) -> dict[str, Any] | None:
    path = RESULTS_DIR / f"{name}.json"
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data
