"""The control plane: switches, level and rate-limit rules, durable and the same everywhere.

The gateway's own Postgres database holds the state (Redis keeps nothing on disk); each
admin change runs in one transaction that bumps `control_state.version` (the row lock
also serialises concurrent admins) and appends to `control_changes` (who, when, what,
before and after). Every gateway process keeps a `Snapshot` in memory for the request
path and reloads it when the version moves: a Redis pub/sub notice (gateway/notices.py)
makes that immediate, and a poll of the version every `poll_s` (0.5 s) makes it
certain, Redis or not, so a change is in force everywhere within a second.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.exc import SQLAlchemyError

from gateway.notices import Notices
from gateway.ratelimit import Rule
from gateway.switches import Override, Snapshot
from paxkit.db import Database

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Actor:
    """Who makes an admin change."""

    name: str
    address: str | None


class ControlStore:
    """Reads and changes the control state in the gateway database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def version(self) -> int:
        row = self.db.fetch_one("SELECT version FROM control_state WHERE id = 1")
        return int(row["version"]) if row else 0

    def load(self) -> Snapshot:
        """The whole state, read in one consistent snapshot."""
        with self.db.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                state = conn.execute(
                    text("SELECT version, level FROM control_state WHERE id = 1")
                ).one()
                overrides = conn.execute(
                    text("SELECT name, is_on, updated_by, updated_at FROM switch_overrides")
                ).all()
                rules = conn.execute(
                    text("SELECT name, route, rate_per_s, burst, scope FROM rate_limit_rules")
                ).all()
        return Snapshot(
            version=int(state.version),
            level=state.level,
            overrides={
                o.name: Override(o.is_on, o.updated_by, o.updated_at.isoformat()) for o in overrides
            },
            rules={
                r.name: Rule(r.name, r.route, float(r.rate_per_s), int(r.burst), r.scope)
                for r in rules
            },
        )

    def set_switch(self, name: str, on: bool, actor: Actor) -> int:
        with self.db.transaction() as conn:
            version = _bump(conn)
            before = conn.execute(
                text("SELECT is_on FROM switch_overrides WHERE name = :name"), {"name": name}
            ).scalar()
            conn.execute(
                text(
                    "INSERT INTO switch_overrides (name, is_on, updated_by) "
                    "VALUES (:name, :on, :by) ON CONFLICT (name) DO UPDATE "
                    "SET is_on = EXCLUDED.is_on, updated_by = EXCLUDED.updated_by, "
                    "updated_at = now()"
                ),
                {"name": name, "on": on, "by": actor.name},
            )
            _log(conn, version, actor, "switch", name, _manual(before), {"manual": on})
        return version

    def clear_switch(self, name: str, actor: Actor) -> int | None:
        """Drop a manual setting; None when there was none."""
        with self.db.transaction() as conn:
            before = conn.execute(
                text("DELETE FROM switch_overrides WHERE name = :name RETURNING is_on"),
                {"name": name},
            ).scalar()
            if before is None:
                return None
            version = _bump(conn)
            _log(conn, version, actor, "switch", name, _manual(before), {"manual": None})
        return version

    def set_level(self, level: str, actor: Actor) -> int:
        with self.db.transaction() as conn:
            before = conn.execute(
                text("SELECT level FROM control_state WHERE id = 1 FOR UPDATE")
            ).scalar()
            version = _bump(conn)
            conn.execute(
                text("UPDATE control_state SET level = :level WHERE id = 1"), {"level": level}
            )
            _log(conn, version, actor, "level", "level", {"level": before}, {"level": level})
        return version

    def put_rule(self, rule: Rule, actor: Actor) -> tuple[int, bool]:
        """Create or replace a rule: (version, created)."""
        with self.db.transaction() as conn:
            version = _bump(conn)
            before = _rule_row(conn, rule.name)
            conn.execute(
                text(
                    "INSERT INTO rate_limit_rules "
                    "(name, route, rate_per_s, burst, scope, updated_by) "
                    "VALUES (:name, :route, :rate, :burst, :scope, :by) ON CONFLICT (name) DO "
                    "UPDATE SET route = EXCLUDED.route, rate_per_s = EXCLUDED.rate_per_s, "
                    "burst = EXCLUDED.burst, scope = EXCLUDED.scope, "
                    "updated_by = EXCLUDED.updated_by, updated_at = now()"
                ),
                {
                    "name": rule.name,
                    "route": rule.route,
                    "rate": rule.rate_per_s,
                    "burst": rule.burst,
                    "scope": rule.scope,
                    "by": actor.name,
                },
            )
            _log(conn, version, actor, "ratelimit", rule.name, before, rule.as_json())
        return version, before is None

    def delete_rule(self, name: str, actor: Actor) -> int | None:
        """Remove a rule; None when there was none."""
        with self.db.transaction() as conn:
            row = conn.execute(
                text(
                    "DELETE FROM rate_limit_rules WHERE name = :name "
                    "RETURNING route, rate_per_s, burst, scope"
                ),
                {"name": name},
            ).first()
            if row is None:
                return None
            version = _bump(conn)
            before = Rule(name, row.route, float(row.rate_per_s), int(row.burst), row.scope)
            _log(conn, version, actor, "ratelimit", name, before.as_json(), None)
        return version

    def changes(self, limit: int) -> list[dict[str, Any]]:
        rows = self.db.fetch_all(
            "SELECT id, version, at, actor, address, kind, target, before, after "
            "FROM control_changes ORDER BY id DESC LIMIT :limit",
            limit=limit,
        )
        return [{**row, "at": row["at"].isoformat()} for row in rows]


def _bump(conn: Connection) -> int:
    """Take the next version (and the lock that serialises admin changes)."""
    return int(
        conn.execute(
            text(
                "UPDATE control_state SET version = version + 1, updated_at = now() "
                "WHERE id = 1 RETURNING version"
            )
        ).scalar_one()
    )


def _log(
    conn: Connection,
    version: int,
    actor: Actor,
    kind: str,
    target: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
) -> None:
    conn.execute(
        text(
            "INSERT INTO control_changes (version, actor, address, kind, target, before, after) "
            "VALUES (:version, :actor, :address, :kind, :target, "
            "CAST(:before AS jsonb), CAST(:after AS jsonb))"
        ),
        {
            "version": version,
            "actor": actor.name,
            "address": actor.address,
            "kind": kind,
            "target": target,
            "before": None if before is None else json.dumps(before),
            "after": None if after is None else json.dumps(after),
        },
    )


def _manual(is_on: bool | None) -> dict[str, Any]:
    return {"manual": is_on}


def _rule_row(conn: Connection, name: str) -> dict[str, Any] | None:
    row = conn.execute(
        text("SELECT route, rate_per_s, burst, scope FROM rate_limit_rules WHERE name = :name"),
        {"name": name},
    ).first()
    if row is None:
        return None
    return Rule(name, row.route, float(row.rate_per_s), int(row.burst), row.scope).as_json()


class ControlPlane:
    """This process's copy of the control state, kept in step with the store."""

    def __init__(
        self,
        store: ControlStore,
        notices: Notices,
        channel: str,
        on_change: Callable[[Snapshot], None] | None = None,
    ) -> None:
        self.store = store
        self.notices = notices
        self.channel = channel
        self.on_change = on_change
        self.snapshot = Snapshot()
        self._reload = threading.Lock()
        notices.on(channel, lambda _: self.refresh())
        notices.every_poll(self.refresh)

    def load(self) -> bool:
        """Reload everything from the store; False (and the old snapshot kept) on failure.

        Loads are serialised, so a later load never installs an older state than an earlier
        one; no version comparison, so a store reset to version 0 is followed too."""
        with self._reload:
            try:
                self.snapshot = self.store.load()
            except SQLAlchemyError as err:
                log.warning("control state not loaded (%s); keeping the last one", err)
                return False
        if self.on_change is not None:
            self.on_change(self.snapshot)
        return True

    def refresh(self) -> None:
        """Reload when the store's version differs from ours."""
        try:
            if self.store.version() != self.snapshot.version:
                self.load()
        except SQLAlchemyError as err:
            log.warning("control state poll failed: %s", err)

    def announce(self, version: int) -> None:
        """After a change here: tell the other processes, and load it ourselves."""
        if not self.notices.publish(self.channel, str(version)):
            log.warning("change %d not published (Redis down); others see it by polling", version)
        self.load()
