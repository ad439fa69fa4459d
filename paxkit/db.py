"""Database access: one pooled SQLAlchemy engine per database, explicit transactions."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from prometheus_client import Counter
from sqlalchemy import URL, Connection, CursorResult, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.util.typing import TupleAny

_GID = re.compile(r"^[A-Za-z0-9_.:-]{1,200}\Z")
# Errors that say "the database is not answering" (down, connection lost, lock or statement
# timeout, pool exhausted), as opposed to a bug in the statement.
UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeout)
# Statements sent, per process (a component's web and worker processes add up in its
# /metrics): the bench divides it by the orders placed, SQL statements per order.
STATEMENTS = Counter("paxmart_sql_statements_total", "SQL statements sent to a database")


def make_engine(url: str | URL, pool_size: int = 16, autocommit: bool = False) -> Engine:
    """A pooled engine; statement_timeout bounds every query a component sends."""
    if isinstance(url, str):
        url = url.replace("postgresql://", "postgresql+psycopg2://", 1)
    options: dict[str, Any] = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=5,
        pool_recycle=1800,
        connect_args={"connect_timeout": 5, "options": "-c statement_timeout=15000"},
        **options,
    )
    event.listen(engine, "before_cursor_execute", _count_statement)
    return engine


def _count_statement(*_: Any) -> None:
    STATEMENTS.inc()


# A `:name` bind parameter, as SQLAlchemy's text() finds them (not `::type` casts).
_BIND = re.compile(r"(?<![:\w\x5c]):(\w+)(?!:)")


@functools.lru_cache(maxsize=1024)
def _driver_sql(sql: str) -> str:
    """`sql` with `:name` parameters in the driver's own style (`%(name)s`)."""
    return _BIND.sub(r"%(\1)s", sql.replace("%", "%%"))


def run(
    conn: Connection, sql: str, params: Mapping[str, Any] | None = None
) -> CursorResult[*TupleAny]:
    """One statement with `:name` parameters, handed to the driver as it is: SQLAlchemy's
    errors, connection invalidation and statement count stay, its text() construct and
    compilation go (about 38 of 109 us of client CPU per statement, make bench's layer
    split and README "Measuring performance")."""
    return conn.exec_driver_sql(_driver_sql(sql), dict(params or {}))


class Database:
    """The handful of ways a component talks to its own database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # Connections that stay in autocommit: single-statement reads need no BEGIN/ROLLBACK,
        # and XA branches issue their own BEGIN ... PREPARE TRANSACTION. A separate pool, so
        # no connection switches mode (two SETs) on every checkout.
        self.autocommit_engine = make_engine(engine.url, engine.pool.size(), autocommit=True)  # type: ignore[attr-defined]

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A local transaction: commit on success, rollback on any error."""
        with self.engine.begin() as conn:
            yield conn

    def fetch_all(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        """One read statement, on its own (no explicit transaction around it).

        A read that finds its pooled connection dead (the server restarted since) runs once
        more: the pool has dropped every connection by then, so the retry connects afresh."""
        try:
            return self._read(sql, params)
        except DBAPIError as err:
            if not err.connection_invalidated:
                raise
        return self._read(sql, params)

    def _read(self, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        with self.autocommit_engine.connect() as conn:
            return [dict(row._mapping) for row in run(conn, sql, params)]

    def fetch_one(self, sql: str, **params: Any) -> dict[str, Any] | None:
        rows = self.fetch_all(sql, **params)
        return rows[0] if rows else None

    @contextmanager
    def bounded_transaction(self, lock_timeout_ms: int) -> Iterator[Connection]:
        """A local transaction whose lock waits give up after `lock_timeout_ms`; BEGIN and
        the timeout go in one round trip (on an autocommit connection, ended by hand)."""
        with self.autocommit_engine.connect() as conn:
            conn.exec_driver_sql(f"BEGIN; SET LOCAL lock_timeout = {int(lock_timeout_ms)}")
            try:
                yield conn
            except BaseException:
                abort(conn)
                raise
            conn.exec_driver_sql("COMMIT")

    @contextmanager
    def autocommit(self) -> Iterator[Connection]:
        """A connection without an implicit transaction (for explicit BEGIN/PREPARE)."""
        with self.autocommit_engine.connect() as conn:
            yield conn

    def dispose(self) -> None:
        self.engine.dispose()
        self.autocommit_engine.dispose()


def abort(conn: Connection) -> None:
    """ROLLBACK an explicit transaction, unless its connection was lost: the server ended the
    transaction with it, and a ROLLBACK would only hide the error that lost it."""
    if not conn.invalidated:
        conn.exec_driver_sql("ROLLBACK")


def quote_gid(gid: str) -> str:
    """A validated SQL literal for PREPARE/COMMIT PREPARED, which take no bind parameters."""
    if not _GID.match(gid):
        raise ValueError(f"invalid transaction id {gid!r}")
    return f"'{gid}'"
