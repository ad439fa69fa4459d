"""Client CPU per SQL statement: SQLAlchemy's text() path against `paxkit.db.run`.

Every hot statement of paxmart goes through `run` (the statement handed to the driver,
with SQLAlchemy's error handling and connection invalidation kept). This measures what
that saves, in interleaved rounds on one connection to the project's cluster: the same
parameterised statement through `conn.execute(text(sql))`, through `run`, and through a
bare psycopg2 cursor (the floor). Writes bench-results/statements.json.

    python -m infra.bench.statements [--rounds 5] [--count 3000]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import text

from infra.bench.common import prepare_servers, write_result
from infra.util import setup_logging
from paxkit.db import make_engine, run

log = logging.getLogger(__name__)

SQL = "SELECT CAST(:qty AS int) + 1 AS n, CAST(:sku AS text) AS sku WHERE :gtid <> ''"
DRIVER_SQL = (
    "SELECT CAST(%(qty)s AS int) + 1 AS n, CAST(%(sku)s AS text) AS sku WHERE %(gtid)s <> ''"
)
PARAMS = {"qty": 2, "sku": "SKU-0001", "gtid": "gtx-bench"}


def cpu_us_per_call(call: Callable[[], Any], count: int) -> float:
    for _ in range(100):
        call()
    started = time.process_time()
    for _ in range(count):
        call()
    return (time.process_time() - started) / count * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=3000)
    args = parser.parse_args()
    setup_logging()
    settings, _ = prepare_servers()
    engine = make_engine(settings.db_urls["coordinator"].rsplit("/", 1)[0] + "/postgres")
    samples: dict[str, list[float]] = {"text": [], "run": [], "psycopg2": []}
    with engine.connect() as conn:
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        paths: dict[str, Callable[[], Any]] = {
            "text": lambda: conn.execute(text(SQL), PARAMS).all(),
            "run": lambda: run(conn, SQL, PARAMS).all(),
            "psycopg2": lambda: (cursor.execute(DRIVER_SQL, PARAMS), cursor.fetchall()),
        }
        for _ in range(args.rounds):
            for name, call in paths.items():
                samples[name].append(cpu_us_per_call(call, args.count))
        conn.rollback()
    engine.dispose()
    ratios = [r / t for r, t in zip(samples["run"], samples["text"], strict=True)]
    result = {
        "cpu_us_per_statement": {k: [round(v, 1) for v in vs] for k, vs in samples.items()},
        "median_us": {k: round(statistics.median(vs), 1) for k, vs in samples.items()},
        "run_over_text": {
            "median": round(statistics.median(ratios), 3),
            "min": round(min(ratios), 3),
            "max": round(max(ratios), 3),
        },
    }
    log.info("client CPU per statement (median us): %s", result["median_us"])
    log.info("run / text(): %s", result["run_over_text"])
    write_result("statements", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
