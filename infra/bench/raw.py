"""The machine's raw limits, measured with no paxmart code, for the order benchmark's ratios.

- `pgbench -N` (simple-update TPC-B) on a scratch database of the project cluster;
- four single-row UPDATEs in four scratch databases per round, as plain commits
  (`4db_plain`) and as real two-phase commits (`4db_xa`: `BEGIN; UPDATE; PREPARE
  TRANSACTION` on all four, then `COMMIT PREPARED` on all four), from as many concurrent
  clients as the order benchmark uses connections, each round in the fewest round trips;
- RabbitMQ: persistent publishes to a durable queue with publisher confirms;
- a trivial Flask endpoint (`infra/bench/trivial.py`) under the gunicorn settings of every
  paxmart component, posted the same order bodies by the same wrk script.

Postgres durability stays at its defaults (fsync, synchronous_commit on); the report
shows them. Writes bench-results/raw.json.

    python -m infra.bench.raw [--seconds 10] [--clients 32]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import pika
import psycopg2
from psycopg2.extensions import connection as PgConnection

from infra.bench import load
from infra.bench.common import (
    CONNECTIONS,
    PREFIX,
    durability,
    prepare_servers,
    write_result,
)
from infra.launcher import Component, Stack
from infra.pgcluster import ClusterInfo
from infra.util import setup_logging
from paxkit.config import Settings
from paxkit.migrate import drop_database, ensure_database

log = logging.getLogger(__name__)

ROWS = 1000
RAW_DATABASES = tuple(f"{PREFIX}raw_{n}" for n in range(1, 5))
PGBENCH_DB = f"{PREFIX}raw_pgbench"
QUEUE = "paxmart.bench.raw"
PUBLISHERS = 8
MESSAGE = json.dumps(
    {
        "order_id": "ord-00000000000000000000",
        "gtid": "gtx-00000000000000000000",
        "user_id": 7,
        "items": [{"sku": "SKU-0003", "qty": 1, "price_cents": 300}],
        "red_packet_cents": 50,
    }
).encode()
TRIVIAL = Component("trivial", "infra.bench.trivial:create_app()", 26020)


def db_url(settings: Settings, name: str) -> str:
    return f"postgresql://{settings.pg_user}@{settings.pg_host}:{settings.pg_port}/{name}"


def fresh_database(url: str) -> None:
    drop_database(url)
    ensure_database(url)


def pgbench(settings: Settings, cluster: ClusterInfo, seconds: int) -> dict[str, Any]:
    """`pgbench -N -c 8 -j 2` against a freshly initialised scratch database."""
    url = db_url(settings, PGBENCH_DB)
    fresh_database(url)
    base = [
        str(cluster.bindir / "pgbench"),
        *("-h", settings.pg_host, "-p", str(settings.pg_port), "-U", settings.pg_user),
    ]
    try:
        subprocess.run(
            [*base, "-i", "-q", PGBENCH_DB], capture_output=True, text=True, check=True, timeout=300
        )
        out = subprocess.run(
            [*base, "-N", "-c", "8", "-j", "2", "-T", str(seconds), PGBENCH_DB],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 60,
        ).stdout
    finally:
        drop_database(url)
    match = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)
    if match is None:
        raise RuntimeError(f"pgbench printed no tps:\n{out}")
    return {"tps": round(float(match.group(1)), 1), "clients": 8, "threads": 2, "seconds": seconds}


def _connect(url: str) -> PgConnection:
    conn = psycopg2.connect(url, connect_timeout=5)
    conn.autocommit = True
    return conn


def _seed(url: str) -> None:
    fresh_database(url)
    conn = _connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE counters (id int PRIMARY KEY, n bigint NOT NULL)")
            cur.execute("INSERT INTO counters SELECT g, 0 FROM generate_series(1, %s) g", (ROWS,))
    finally:
        conn.close()


UPDATE = "UPDATE counters SET n = n + 1 WHERE id = %s"


def _plain_round(conns: list[PgConnection], rows: list[int], gid: str) -> None:
    """Four commits: each UPDATE is its own transaction (autocommit, one round trip)."""
    for conn, row in zip(conns, rows, strict=True):
        with conn.cursor() as cur:
            cur.execute(UPDATE, (row,))


def _xa_round(conns: list[PgConnection], rows: list[int], gid: str) -> None:
    """Phase 1 on all four (one round trip each), then phase 2 on all four."""
    for n, (conn, row) in enumerate(zip(conns, rows, strict=True)):
        with conn.cursor() as cur:
            cur.execute(f"BEGIN; {UPDATE}; PREPARE TRANSACTION '{gid}-{n}'", (row,))
    for n, conn in enumerate(conns):
        with conn.cursor() as cur:
            cur.execute(f"COMMIT PREPARED '{gid}-{n}'")


Round = Callable[[list[PgConnection], list[int], str], None]


def _client(urls: list[str], do_round: Round, client: int, stop_at: float, done: list[int]) -> None:
    conns = [_connect(url) for url in urls]
    rng = random.Random(client)
    rounds = 0
    try:
        while time.monotonic() < stop_at:
            rows = [rng.randint(1, ROWS) for _ in conns]
            do_round(conns, rows, f"rawxa-{client}-{rounds}")
            rounds += 1
    finally:
        for conn in conns:
            conn.close()
        done[client] = rounds


def run_threads(targets: list[Callable[[], None]]) -> float:
    """Run the targets on threads until all finish; the seconds taken. Re-raises the first
    error a thread hit, so a broken measurement is never reported as a slow one."""
    errors: list[BaseException] = []

    def guarded(target: Callable[[], None]) -> None:
        try:
            target()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(target,)) for target in targets]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return time.monotonic() - started


def four_databases(settings: Settings, clients: int, seconds: int, xa: bool) -> dict[str, Any]:
    """Rounds/s of four single-row updates in four databases from `clients` threads."""
    urls = [db_url(settings, name) for name in RAW_DATABASES]
    done = [0] * clients
    stop_at = time.monotonic() + seconds
    do_round: Round = _xa_round if xa else _plain_round
    elapsed = run_threads(
        [partial(_client, urls, do_round, n, stop_at, done) for n in range(clients)]
    )
    return {
        "rounds_per_s": round(sum(done) / elapsed, 1),
        "clients": clients,
        "seconds": round(elapsed, 2),
        "commits_per_round": 4,
        "round_trips_per_round": 8 if xa else 4,
    }


def _publisher(url: str, stop_at: float, counts: list[int], slot: int) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        properties = pika.BasicProperties(delivery_mode=2, content_type="application/json")
        sent = 0
        while time.monotonic() < stop_at:
            channel.basic_publish("", QUEUE, MESSAGE, properties, mandatory=True)
            sent += 1
        counts[slot] = sent
    finally:
        if connection.is_open:
            connection.close()


def rabbitmq(settings: Settings, publishers: int, seconds: int) -> dict[str, Any]:
    """Persistent messages/s to a durable queue, each publish waiting for its confirm."""
    admin = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    channel = admin.channel()
    channel.queue_delete(QUEUE)
    channel.queue_declare(QUEUE, durable=True)
    counts = [0] * publishers
    stop_at = time.monotonic() + seconds
    try:
        elapsed = run_threads(
            [partial(_publisher, settings.amqp_url, stop_at, counts, n) for n in range(publishers)]
        )
    finally:
        if admin.is_open:
            channel.queue_delete(QUEUE)
            admin.close()
    return {
        "msgs_per_s": round(sum(counts) / elapsed, 1),
        "publishers": publishers,
        "seconds": round(elapsed, 2),
        "message_bytes": len(MESSAGE),
    }


def trivial_flask(settings: Settings, connections: int, seconds: int) -> dict[str, Any]:
    """wrk posting order bodies to the trivial endpoint under paxmart's gunicorn settings."""
    logs = settings.state_dir / "bench-logs" / "raw"
    with Stack({}, logs, (TRIVIAL,)) as stack:
        url = stack.url("trivial")
        load.burst(url, 2, connections, path="/ok")
        run = load.burst(url, seconds, connections, path="/ok")
    return {"rps": round(run.rps, 1), "errors": run.counts.errors, "run": run.as_json()}


def attempt(name: str, step: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """One measurement; a failure (say, a broker restarted by another test run) is recorded
    as that limit's error so the other limits are still measured."""
    try:
        result = step()
    except Exception as exc:
        log.exception("raw %s failed", name)
        return {"error": f"{type(exc).__name__}: {exc}"}
    log.info("raw %s: %s", name, {k: v for k, v in result.items() if k != "run"})
    return result


def measure(settings: Settings, cluster: ClusterInfo, seconds: int, clients: int) -> dict:
    for name in RAW_DATABASES:
        _seed(db_url(settings, name))
    try:
        results: dict[str, Any] = {"durability": durability(settings)}
        steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("pgbench", lambda: pgbench(settings, cluster, seconds)),
            ("4db_plain", lambda: four_databases(settings, clients, seconds, xa=False)),
            ("4db_xa", lambda: four_databases(settings, clients, seconds, xa=True)),
            ("rabbitmq", lambda: rabbitmq(settings, PUBLISHERS, seconds)),
            ("trivial_flask", lambda: trivial_flask(settings, clients, seconds)),
        ]
        for name, step in steps:
            results[name] = attempt(name, step)
    finally:
        for name in RAW_DATABASES:
            drop_database(db_url(settings, name))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--clients", type=int, default=CONNECTIONS)
    args = parser.parse_args(argv)
    setup_logging()
    settings, cluster = prepare_servers()
    results = measure(settings, cluster, args.seconds, args.clients)
    write_result("raw", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
