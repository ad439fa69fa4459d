"""Database access: one pooled SQLAlchemy engine per database, explicit transactions."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, text

_GID = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")


def make_engine(url: str, pool_size: int = 16) -> Engine:
    """A pooled engine; statement_timeout bounds every query a component sends."""
    return create_engine(
        url.replace("postgresql://", "postgresql+psycopg2://", 1),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=5,
        pool_recycle=1800,
        connect_args={"connect_timeout": 5, "options": "-c statement_timeout=15000"},
    )


class Database:
    """The handful of ways a component talks to its own database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A local transaction: commit on success, rollback on any error."""
        with self.engine.begin() as conn:
            yield conn

    def fetch_all(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(text(sql), params)]

    def fetch_one(self, sql: str, **params: Any) -> dict[str, Any] | None:
        rows = self.fetch_all(sql, **params)
        return rows[0] if rows else None

    @contextmanager
    def autocommit(self) -> Iterator[Connection]:
        """A connection without an implicit transaction (for explicit BEGIN/PREPARE)."""
        with self.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            yield conn

    def dispose(self) -> None:
        self.engine.dispose()


def quote_gid(gid: str) -> str:
    """A validated SQL literal for PREPARE/COMMIT PREPARED, which take no bind parameters."""
    if not _GID.match(gid):
        raise ValueError(f"invalid transaction id {gid!r}")
    return f"'{gid}'"
