"""Best-effort notification (最大努力通知): tell a callback URL that something settled.

Rows are queued in the same transaction as the change they announce. A loop claims due
rows (`FOR UPDATE SKIP LOCKED`, then a lease by pushing `next_at`), POSTs the current
representation with a timeout, records every attempt, and reschedules on a growing
schedule until the receiver answers 2xx or the schedule runs out. The receiver can
always reconcile by reading the resource itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import requests
from sqlalchemy import Connection, text

from paxkit.db import Database
from paxkit.retention import OLDER_THAN_HORIZON, OldRows, Rule

log = logging.getLogger(__name__)

Render = Callable[[Connection, str], dict[str, Any] | None]
BATCH = 20
LEASE_S = 30
TIMEOUT_S = 3.0


# Retention: a finished notification's attempts, then the notification itself, are needed
# by nothing (the notifier only claims unfinished ones, and a settled order never queues
# another); the attempts of one still being retried are kept, whatever their age.
NOTIFICATION_RULES: tuple[Rule, ...] = (
    OldRows(
        "notification_attempts",
        f"t.at {OLDER_THAN_HORIZON} AND EXISTS (SELECT 1 FROM notifications n "
        f"WHERE n.id = t.notification_id "
        f"AND COALESCE(n.delivered_at, n.gave_up_at) {OLDER_THAN_HORIZON})",
    ),
    OldRows(
        "notifications",
        f"t.created_at {OLDER_THAN_HORIZON} "
        f"AND COALESCE(t.delivered_at, t.gave_up_at) {OLDER_THAN_HORIZON} "
        "AND NOT EXISTS (SELECT 1 FROM notification_attempts a WHERE a.notification_id = t.id)",
    ),
)


def host_allowed(url: str, allowed_hosts: tuple[str, ...]) -> bool:
    try:
        parts = urlsplit(url)
        return parts.scheme in ("http", "https") and (parts.hostname or "") in allowed_hosts
    except ValueError:  # a malformed IPv6 host
        return False


class Notifier:
    def __init__(
        self,
        db: Database,
        render: Render,
        schedule_s: tuple[float, ...],
        allowed_hosts: tuple[str, ...],
    ) -> None:
        self.db = db
        self.render = render
        self.schedule_s = schedule_s
        self.allowed_hosts = allowed_hosts
        self.http = requests.Session()

    def run_once(self) -> int:
        """Attempt every due notification once; returns how many were attempted."""
        due = self._claim()
        for item in due:
            self._attempt(item)
        return len(due)

    def _claim(self) -> list[dict[str, Any]]:
        with self.db.transaction() as conn:
            rows = conn.execute(
                text(
                    "UPDATE notifications SET next_at = now() + make_interval(secs => :lease) "
                    "WHERE id IN (SELECT id FROM notifications WHERE delivered_at IS NULL "
                    "AND gave_up_at IS NULL AND next_at <= now() ORDER BY next_at "
                    "LIMIT :batch FOR UPDATE SKIP LOCKED) "
                    "RETURNING id, order_id, url, attempts"
                ),
                {"lease": LEASE_S, "batch": BATCH},
            ).all()
        return [dict(r._mapping) for r in rows]

    def _attempt(self, item: dict[str, Any]) -> None:
        attempt = item["attempts"] + 1
        status_code, error = self._send(item)
        delivered = status_code is not None and 200 <= status_code < 300
        with self.db.transaction() as conn:
            conn.execute(
                text(
                    "INSERT INTO notification_attempts (notification_id, attempt, status_code, "
                    "error) VALUES (:id, :attempt, :code, :error)"
                ),
                {"id": item["id"], "attempt": attempt, "code": status_code, "error": error},
            )
            conn.execute(
                text(self._outcome_sql(delivered, attempt)),
                {"id": item["id"], "attempt": attempt, "delay": self._delay(attempt)},
            )

    def _outcome_sql(self, delivered: bool, attempt: int) -> str:
        if delivered:
            return (
                "UPDATE notifications SET attempts = :attempt, delivered_at = now() WHERE id = :id"
            )
        if attempt > len(self.schedule_s):
            return "UPDATE notifications SET attempts = :attempt, gave_up_at = now() WHERE id = :id"
        return (
            "UPDATE notifications SET attempts = :attempt, "
            "next_at = now() + make_interval(secs => :delay) WHERE id = :id"
        )

    def _delay(self, attempt: int) -> float:
        return self.schedule_s[min(attempt, len(self.schedule_s)) - 1]  # after attempt N: Nth

    def _send(self, item: dict[str, Any]) -> tuple[int | None, str | None]:
        if not host_allowed(item["url"], self.allowed_hosts):
            return None, "host not allowed"
        with self.db.engine.connect() as conn:
            body = self.render(conn, item["order_id"])
        try:
            response = self.http.post(item["url"], json=body, timeout=TIMEOUT_S)
        except requests.RequestException as err:
            return None, repr(err)[:500]
        return response.status_code, None if response.ok else response.text[:200]
