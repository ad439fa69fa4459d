"""The coordinator's durable log of global transactions and their branch timelines."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, text

from coordinator.states import COMMITTING, FINAL, UNFINISHED
from paxkit.db import Database
from paxkit.retention import MESSAGING_RULES, OLDER_THAN_HORIZON, OldRows, Rule

TXN_COLUMNS = (
    "gtid, mode, status, reason, branches, lease_until, recovery_attempts, created_at, updated_at"
)


@dataclass
class Event:
    branch: str
    op: str
    outcome: str
    detail: str | None = None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


# Prefixed to a write sent on an autocommit connection: the statements of one query string
# run as one implicit transaction, so SET LOCAL covers exactly that write.
RELAXED = "SET LOCAL synchronous_commit = off; "
EVENTS_FROM_JSON = (
    "INSERT INTO branch_events (gtid, branch, op, outcome, detail, at) "
    "SELECT :gtid, e.branch, e.op, e.outcome, e.detail, e.at "
    "FROM jsonb_to_recordset(CAST(:events AS jsonb)) "
    "AS e(branch text, op text, outcome text, detail text, at timestamptz)"
)


def finished_txn_rows(table: str, age_column: str) -> OldRows:
    """Retention of a transaction's timeline or reports: kept while it is unfinished and
    for the horizon after it finished (then nothing reads them but an operator), together.
    The transactions themselves are kept: the check-back presumes abort for a gtid the log
    doesn't hold, so forgetting a committed one would let a late check-back abort it."""
    return OldRows(
        table,
        f"t.{age_column} {OLDER_THAN_HORIZON} AND NOT EXISTS (SELECT 1 FROM global_txns g "
        "WHERE g.gtid = t.gtid AND (g.status <> ALL(:final) "
        f"OR g.updated_at >= now() - make_interval(secs => :horizon_s)))",
        {"final": list(FINAL)},
    )


RETENTION_RULES: tuple[Rule, ...] = (
    finished_txn_rows("branch_events", "at"),
    finished_txn_rows("msg_reports", "received_at"),
    *MESSAGING_RULES,
)


def _events_json(events: list[Event]) -> str:
    return json.dumps(
        [
            {
                "branch": e.branch,
                "op": e.op,
                "outcome": e.outcome,
                "detail": e.detail,
                "at": e.at.isoformat(),
            }
            for e in events
        ]
    )


class TxnLog:
    """Every write is one statement in one round trip. Presumed abort: only the commit
    decision waits for its fsync; losing any other write in a crash is safe, so those are
    sent with synchronous_commit off (RELAXED)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def _write(self, sql: str, params: dict[str, Any], durable: bool = False) -> Any:
        """One write, on its own: the first row it returns, if any."""
        with self.db.autocommit() as conn:
            result = conn.execute(text(sql if durable else RELAXED + sql), params)
            return result.first() if result.returns_rows else None

    def begin(
        self, gtid: str, mode: str, branches: list[dict[str, Any]], lease_s: float, durable: bool
    ) -> dict[str, Any] | None:
        """Record a transaction as preparing; None if the gtid was already taken.

        Only 2PC may begin without waiting for the fsync (presumed abort, and its prepared
        branches can be listed); TCC and saga must know every branch they touched."""
        row = self._write(
            "INSERT INTO global_txns (gtid, mode, status, branches, lease_until) "
            "VALUES (:gtid, :mode, 'preparing', CAST(:branches AS jsonb), "
            "now() + make_interval(secs => :lease)) ON CONFLICT (gtid) DO NOTHING "
            f"RETURNING {TXN_COLUMNS}",
            {"gtid": gtid, "mode": mode, "branches": json.dumps(branches), "lease": lease_s},
            durable,
        )
        return dict(row._mapping) if row else None

    def decide(self, txn: dict[str, Any], decision: str, reason: str | None, lease_s: float) -> str:
        """Move a preparing transaction to `decision`; returns the status that now holds.

        A commit decision is written with synchronous commit: it is the one write that
        must survive any crash before phase 2 starts. A transaction missing from the log
        (its relaxed begin was lost in a crash) is aborted: presumed abort."""
        row = self._write(
            "UPDATE global_txns SET status = :status, reason = :reason, "
            "lease_until = now() + make_interval(secs => :lease), updated_at = now() "
            "WHERE gtid = :gtid AND status = 'preparing' RETURNING status",
            {"gtid": txn["gtid"], "status": decision, "reason": reason, "lease": lease_s},
            durable=decision == COMMITTING,
        )
        if row is not None:
            return str(row.status)
        return str(self.resolve(txn["gtid"], txn["mode"])["status"])

    def resolve(self, gtid: str, mode: str) -> dict[str, Any]:
        """The status of a transaction; one the log never heard of is recorded aborted first,
        so a late begin with that gtid is refused (the initiator's check-back)."""
        with self.db.transaction() as conn:
            conn.execute(
                text(
                    "INSERT INTO global_txns (gtid, mode, status, reason, branches, lease_until)"
                    " VALUES (:gtid, :mode, 'aborted', 'timeout', '[]', now()) "
                    "ON CONFLICT (gtid) DO NOTHING"
                ),
                {"gtid": gtid, "mode": mode},
            )
            row = conn.execute(
                text(f"SELECT {TXN_COLUMNS} FROM global_txns WHERE gtid = :gtid"), {"gtid": gtid}
            ).one()
        return dict(row._mapping)

    def finish(self, gtid: str, from_status: str, to_status: str, events: list[Event]) -> None:
        self._write(
            "WITH moved AS (UPDATE global_txns SET status = :to, updated_at = now() "
            "WHERE gtid = :gtid AND status = :from) " + EVENTS_FROM_JSON,
            {"gtid": gtid, "from": from_status, "to": to_status, "events": _events_json(events)},
        )

    def postpone(self, gtid: str, delay_s: float, events: list[Event]) -> None:
        """Phase 2 did not complete: recovery takes it up again after `delay_s`."""
        self._write(
            "WITH moved AS (UPDATE global_txns SET lease_until = now() + "
            "make_interval(secs => :d), updated_at = now() WHERE gtid = :gtid) " + EVENTS_FROM_JSON,
            {"gtid": gtid, "d": delay_s, "events": _events_json(events)},
        )

    def record(self, gtid: str, events: list[Event]) -> None:
        if events:
            self._write(EVENTS_FROM_JSON, {"gtid": gtid, "events": _events_json(events)})

    @staticmethod
    def write_events(conn: Connection, gtid: str, events: list[Event]) -> None:
        """Events inside the caller's transaction (a message consumer's, say)."""
        if events:
            conn.execute(text(EVENTS_FROM_JSON), {"gtid": gtid, "events": _events_json(events)})

    def claim_expired(self, limit: int, lease_s: float) -> list[dict[str, Any]]:
        """Unfinished transactions whose lease ran out, leased to this caller.

        SKIP LOCKED lets several coordinator processes recover at once without sharing
        a transaction."""
        with self.db.transaction() as conn:
            rows = conn.execute(
                text(
                    "UPDATE global_txns SET lease_until = now() + make_interval(secs => :lease),"
                    " recovery_attempts = recovery_attempts + 1 WHERE gtid IN ("
                    " SELECT gtid FROM global_txns WHERE status = ANY(:unfinished)"
                    " AND lease_until < now() ORDER BY lease_until LIMIT :limit"
                    f" FOR UPDATE SKIP LOCKED) RETURNING {TXN_COLUMNS}"
                ),
                {"lease": lease_s, "limit": limit, "unfinished": list(UNFINISHED)},
            ).all()
        return [dict(r._mapping) for r in rows]

    def statuses(self, gtids: list[str]) -> dict[str, str]:
        rows = self.db.fetch_all(
            "SELECT gtid, status FROM global_txns WHERE gtid = ANY(:gtids)", gtids=gtids
        )
        return {r["gtid"]: r["status"] for r in rows}

    def outcomes(self, gtids: list[str]) -> dict[str, dict[str, Any]]:
        """Status of each known gtid and, once final, for how many seconds it has been (at
        most: its last update came at or after its finish)."""
        rows = self.db.fetch_all(
            "SELECT gtid, status, CASE WHEN status = ANY(:final) "
            "THEN extract(epoch FROM now() - updated_at) END AS final_for_s "
            "FROM global_txns WHERE gtid = ANY(:gtids)",
            gtids=gtids,
            final=list(FINAL),
        )
        return {
            r["gtid"]: {
                "status": r["status"],
                "final_for_s": None if r["final_for_s"] is None else float(r["final_for_s"]),
            }
            for r in rows
        }

    def get(self, gtid: str) -> dict[str, Any] | None:
        return self.db.fetch_one(
            f"SELECT {TXN_COLUMNS} FROM global_txns WHERE gtid = :gtid", gtid=gtid
        )

    def events(self, gtid: str) -> list[dict[str, Any]]:
        return self.db.fetch_all(
            "SELECT branch, op, outcome, detail, at FROM branch_events WHERE gtid = :gtid "
            "ORDER BY id",
            gtid=gtid,
        )

    def recent(self, status: str | None, limit: int) -> list[dict[str, Any]]:
        return self.db.fetch_all(
            f"SELECT {TXN_COLUMNS} FROM global_txns "
            "WHERE (CAST(:status AS text) IS NULL OR status = :status) "
            "ORDER BY created_at DESC LIMIT :limit",
            status=status,
            limit=limit,
        )

    def unfinished_counts(self) -> dict[str, int]:
        rows = self.db.fetch_all(
            "SELECT status, count(*) AS n FROM global_txns WHERE status = ANY(:unfinished) "
            "GROUP BY status",
            unfinished=list(UNFINISHED),
        )
        return {r["status"]: int(r["n"]) for r in rows}

    def stuck(self, older_than_s: float) -> list[dict[str, Any]]:
        """Unfinished transactions not touched for longer than `older_than_s`."""
        rows = self.db.fetch_all(
            "SELECT gtid, status, updated_at FROM global_txns WHERE status = ANY(:unfinished) "
            "AND updated_at < now() - make_interval(secs => :h)",
            unfinished=list(UNFINISHED),
            h=older_than_s,
        )
        return [{**r, "updated_at": r["updated_at"].isoformat()} for r in rows]

    def count(self) -> int:
        row = self.db.fetch_one("SELECT count(*) AS n FROM global_txns")
        return int(row["n"]) if row else 0
