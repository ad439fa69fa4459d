"""Fixtures for integration tests: scratch databases a test module owns alone."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from paxkit.config import Settings
from paxkit.db import Database, make_engine
from paxkit.migrate import apply_migrations, drop_database, ensure_database, migration_dirs


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
