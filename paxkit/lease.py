"""Leases with fencing tokens: one holder of a named job at a time, and resources that
refuse the writes of a holder whose lease has gone.

The scheme has two halves (after Martin Kleppmann, "How to do distributed locking", 2016):

1. The lock service, `Leases`, grants a lease on a name for a time to live. Every grant
   carries a fencing token one higher than any token granted under that name before. The
   holder keeps the lease by renewing it before it runs out, and gives it back by
   releasing it; a lease neither renewed nor released lapses, and the next process to ask
   gets it with the next token.
2. The protected resource, `Fence`, remembers the highest token it has accepted a write
   from and refuses (`StaleToken`) a write that carries a lower one. The check is one
   statement in the same local transaction as the write: both commit, or neither does.

A lease alone is not enough. A holder can be paused past its time to live (a long garbage
collection, a SIGSTOP, a stalled VM or network) while its lease goes to another process.
When it wakes it still believes it holds the lease: whatever it checked before the pause
is out of date, and it writes. Only the resource, which has already seen the new holder's
higher token, can tell the late write apart, so the resource makes the final check. With
the fence in place, the time to live only decides how soon a dead holder is replaced; it
no longer decides whether a slow one corrupts data.

Expiry is the database's clock (`now()`) against the database's clock: every grant,
renewal and expiry test is made by the one server that keeps the leases, so a process
whose clock runs fast or slow can neither take a lease early nor keep one late.

Postgres, not Redis: a fencing token must never be handed out twice. This project's Redis
keeps nothing on disk (infra/deps.py starts it with no snapshots and no append-only
file; it holds fault armings, rate-limit buckets and a cache), so a
counter kept there starts again from zero after a restart: a new holder would get a token
an earlier holder already had, and the resource could no longer tell the two apart. A
lease row in Postgres is committed to the write-ahead log before it is granted and is
never deleted, so its token survives expiry, release and restarts; and the fence can live
in the very database whose rows it protects, in the same transaction as the write.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from paxkit.db import Database, run

LEASE_COLUMNS = "name, owner, token, expires"

# Grant when there is no lease under the name yet, or when the last one has lapsed or been
# released; the token goes up by one either way.
_ACQUIRE = (
    "INSERT INTO leases AS l (name, owner, token, expires) "
    "VALUES (:name, :owner, 1, now() + make_interval(secs => :ttl_s)) "
    "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, token = l.token + 1, "
    f"expires = excluded.expires WHERE l.expires <= now() RETURNING {LEASE_COLUMNS}"
)
_HELD_BY_IT = "name = :name AND owner = :owner AND token = :token AND expires > now()"
_RENEW = (
    "UPDATE leases SET expires = now() + make_interval(secs => :ttl_s) "
    f"WHERE {_HELD_BY_IT} RETURNING {LEASE_COLUMNS}"
)
_RELEASE = f"UPDATE leases SET expires = now() WHERE {_HELD_BY_IT}"
_HELD = f"SELECT {LEASE_COLUMNS} FROM leases WHERE name = :name AND expires > now()"
# Accept a token no lower than the highest seen, and remember it; the row stays locked
# until the write's transaction ends, so writes under different tokens take turns.
_FENCE = (
    "INSERT INTO fences AS f (resource, token) VALUES (:resource, :token) "
    "ON CONFLICT (resource) DO UPDATE SET token = excluded.token "
    "WHERE f.token <= excluded.token RETURNING token"
)


@dataclass(frozen=True)
class Lease:
    """A grant: `owner` holds `name` until `expires` (the database's time), under `token`."""

    name: str
    owner: str
    token: int
    expires: datetime


class LeaseLost(Exception):
    """A renewal found the lease no longer this holder's: it lapsed, and maybe was taken."""


class StaleToken(Exception):
    """A resource refused a write: a holder with a higher token has written to it since."""

    def __init__(self, resource: str, token: int) -> None:
        super().__init__(
            f"{resource} refused a write under fencing token {token}: it has accepted a "
            "higher token since, so that lease has passed to another holder"
        )
        self.resource = resource
        self.token = token


def new_owner() -> str:
    """A name for this process as a lease holder: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def _lease(row: Mapping[str, Any]) -> Lease:
    return Lease(row["name"], row["owner"], int(row["token"]), row["expires"])


class Leases:
    """The lock service over one database's `leases` table (paxkit/sql_lease), for `owner`."""

    def __init__(self, db: Database, owner: str) -> None:
        self.db = db
        self.owner = owner

    def acquire(self, name: str, ttl_s: float) -> Lease | None:
        """The lease on `name` for `ttl_s` seconds, with a new token; None while another
        holder's lease (or this owner's own) is still live."""
        row = self._one(_ACQUIRE, name=name, owner=self.owner, ttl_s=_positive(ttl_s))
        return _lease(row) if row else None

    def renew(self, lease: Lease, ttl_s: float) -> Lease:
        """Keep-alive: push the expiry `ttl_s` seconds from now, under the same token.
        Raises LeaseLost once the lease has lapsed, whether or not another took it."""
        row = self._one(_RENEW, **self._identity(lease), ttl_s=_positive(ttl_s))
        if row is None:
            raise LeaseLost(f"lease {lease.name!r} (token {lease.token}) is no longer held")
        return _lease(row)

    def release(self, lease: Lease) -> bool:
        """Give the lease back now; False when it was not this holder's to give any more."""
        with self.db.autocommit() as conn:
            return run(conn, _RELEASE, self._identity(lease)).rowcount == 1

    def held(self, name: str) -> Lease | None:
        """The live lease on `name`, whoever holds it; None when it is free."""
        row = self.db.fetch_one(_HELD, name=name)
        return _lease(row) if row else None

    def _identity(self, lease: Lease) -> dict[str, Any]:
        return {"name": lease.name, "owner": self.owner, "token": lease.token}

    def _one(self, sql: str, **params: Any) -> Mapping[str, Any] | None:
        with self.db.autocommit() as conn:
            row = run(conn, sql, params).first()
        return dict(row._mapping) if row else None


@dataclass(frozen=True)
class Fence:
    """The resource side: a named resource, in the database that holds it (`fences`)."""

    resource: str

    def check(self, conn: Connection, token: int) -> None:
        """Admit a write under `token` in `conn`'s transaction, or raise StaleToken (the
        caller's transaction then rolls back, its write with it)."""
        admitted = run(conn, _FENCE, {"resource": self.resource, "token": token}).first()
        if admitted is None:
            raise StaleToken(self.resource, token)


def _positive(ttl_s: float) -> float:
    if not ttl_s > 0:
        raise ValueError(f"a lease's time to live must be positive, not {ttl_s!r}")
    return ttl_s
