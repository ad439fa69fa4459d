"""Per-database versioned migrations: create, migrate (seed included), reset.

Each database has an ordered list of migration folders; every `NNNN_name.sql` file is
applied once, in its own transaction, and recorded in `schema_migrations`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg2
from psycopg2 import sql

from paxkit.bootstrap import declaration
from paxkit.config import Settings, load_settings
from paxkit.schema import ACCEPTOR_SQL

log = logging.getLogger(__name__)


def migration_dirs(database: str) -> list[Path]:
    """The folders whose migrations build one component's database, in order."""
    return list(declaration(database).migrations)


def database_migrations(settings: Settings) -> dict[str, list[Path]]:
    """Every database of the stack and the folders that build it: each component's, and
    each Paxos acceptor's (mode paxos)."""
    folders = {name: migration_dirs(name) for name in settings.components}
    return {**folders, **{name: [ACCEPTOR_SQL] for name in settings.acceptors}}


def _split_url(url: str) -> tuple[str, str]:
    """(server URL pointing at the maintenance db, database name)."""
    base, _, name = url.rpartition("/")
    return f"{base}/postgres", name.split("?")[0]


def ensure_database(url: str) -> bool:
    """Create the database if missing; True when it was created."""
    admin_url, name = _split_url(url)
    conn = psycopg2.connect(admin_url, connect_timeout=5)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone():
                return False
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            return True
    finally:
        conn.close()


@contextlib.contextmanager
def refusing_connections(url: str) -> Iterator[None]:
    """The database refuses new connections and loses its sessions until the block ends:
    an outage of one database while its cluster goes on serving the others."""
    admin_url, name = _split_url(url)
    conn = psycopg2.connect(admin_url, connect_timeout=5)
    conn.autocommit = True
    allow = sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}")
    try:
        with conn.cursor() as cur:
            cur.execute(allow.format(sql.Identifier(name), sql.Literal(False)))
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
        yield
    finally:
        with conn.cursor() as cur:
            cur.execute(allow.format(sql.Identifier(name), sql.Literal(True)))
        conn.close()


def drop_database(url: str) -> None:
    """Drop the database, disconnecting its sessions and rolling back its prepared xacts."""
    admin_url, name = _split_url(url)
    conn = psycopg2.connect(admin_url, connect_timeout=5)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT gid FROM pg_prepared_xacts WHERE database = %s", (name,))
            gids = [row[0] for row in cur.fetchall()]
        _rollback_prepared(url, gids)
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
    finally:
        conn.close()


def _rollback_prepared(url: str, gids: list[str]) -> None:
    if not gids:
        return
    conn = psycopg2.connect(url, connect_timeout=5)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for gid in gids:
                cur.execute(sql.SQL("ROLLBACK PREPARED {}").format(sql.Literal(gid)))
    finally:
        conn.close()


def apply_migrations(url: str, dirs: list[Path]) -> list[str]:
    """Apply every migration not applied yet; returns the versions applied now."""
    conn = psycopg2.connect(url, connect_timeout=5)
    applied_now: list[str] = []
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            # One migrator at a time per database (several launchers, tests).
            cur.execute("SELECT pg_advisory_xact_lock(7283001)")
            cur.execute("SELECT version FROM schema_migrations")
            done = {row[0] for row in cur.fetchall()}
            for version, path in _pending(dirs, done):
                cur.execute(path.read_text())
                cur.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
                applied_now.append(version)
    finally:
        conn.close()
    return applied_now


def _pending(dirs: list[Path], done: set[str]) -> list[tuple[str, Path]]:
    pending = []
    for folder in dirs:
        for path in sorted(folder.glob("*.sql")):
            version = f"{folder.parent.name}/{folder.name}/{path.name}"
            if version not in done:
                pending.append((version, path))
    return pending


def pending_migrations(url: str, dirs: list[Path]) -> list[str]:
    """The versions not applied yet to one database (all of them while it has none)."""
    conn = psycopg2.connect(url, connect_timeout=5)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
            row = cur.fetchone()
            done: set[str] = set()
            if row and row[0]:
                cur.execute("SELECT version FROM schema_migrations")
                done = {r[0] for r in cur.fetchall()}
    finally:
        conn.close()
    return [version for version, _ in _pending(dirs, done)]


def _not_migrated(settings: Settings, databases: list[str]) -> dict[str, str]:
    """Each named database that is not at the latest schema, and why."""
    folders = database_migrations(settings)
    waiting: dict[str, str] = {}
    for database in databases:
        try:
            pending = pending_migrations(settings.db_urls[database], folders[database])
        except psycopg2.Error as exc:  # not up yet, or not created yet
            waiting[database] = (str(exc).strip() or type(exc).__name__).splitlines()[0]
            continue
        if pending:
            waiting[database] = f"{len(pending)} migrations pending, first {pending[0]}"
    return waiting


def wait_for_migrations(
    settings: Settings, databases: list[str], timeout_s: float, interval_s: float = 2.0
) -> dict[str, str]:
    """Poll until every named database has every migration of this code applied (the
    migrator runs elsewhere, e.g. a Kubernetes Job); {} then, else what is still missing
    when `timeout_s` runs out. A process of a newer image thus never runs on an old schema."""
    unknown = set(databases) - set(database_migrations(settings))
    if unknown:
        raise KeyError(f"no database {sorted(unknown)} in the stack")
    deadline = time.monotonic() + timeout_s
    while True:
        waiting = _not_migrated(settings, databases)
        remaining = deadline - time.monotonic()
        if not waiting or remaining <= 0:
            return waiting
        log.info("waiting for migrations: %s", waiting)
        time.sleep(min(interval_s, remaining))


def migrate_all(settings: Settings, reset: bool = False) -> dict[str, list[str]]:
    """Bring every database to the latest schema (and seed); with reset, start from empty."""
    report: dict[str, list[str]] = {}
    for database, folders in database_migrations(settings).items():
        url = settings.db_urls[database]
        if reset:
            drop_database(url)
        ensure_database(url)
        report[database] = apply_migrations(url, folders)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Migrate (and seed) every paxmart database.")
    parser.add_argument("--reset", action="store_true", help="drop every database first")
    parser.add_argument(
        "--wait",
        nargs="+",
        metavar="DATABASE",
        help="migrate nothing: wait until these databases are migrated (exit 1 on timeout)",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds --wait waits")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.wait:
        waiting = wait_for_migrations(load_settings(), args.wait, args.timeout)
        for database, why in waiting.items():
            log.error("%-12s not migrated after %gs: %s", database, args.timeout, why)
        return 1 if waiting else 0
    report = migrate_all(load_settings(), reset=args.reset)
    for database, versions in report.items():
        log.info("%-12s %s", database, ", ".join(versions) if versions else "up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
