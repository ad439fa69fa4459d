"""The coordinator's durable log of global transactions and their branch timelines (SQL)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection

from coordinator.ports import Branch, Event, Txn, TxnFilter
from coordinator.states import FINAL, PREPARING, PRESUMED, UNFINISHED, is_durable, next_status
from paxkit.db import Database, run
from paxkit.messaging import BranchReport
from paxkit.outbox import enqueue
from paxkit.retention import MESSAGING_RULES, OLDER_THAN_HORIZON, OldRows, Rule

TXN_COLUMNS = (
    "gtid, mode, status, reason, branches, lease_until, recovery_attempts, created_at, updated_at"
)

# Prefixed to a write sent on an autocommit connection: the statements of one query string
# run as one implicit transaction, so SET LOCAL covers exactly that write.
RELAXED = "SET LOCAL synchronous_commit = off; "
EVENTS_FROM_JSON = (
    "INSERT INTO branch_events (gtid, branch, op, outcome, detail, at) "
    "SELECT :gtid, e.branch, e.op, e.outcome, e.detail, e.at "
    "FROM jsonb_to_recordset(CAST(:events AS jsonb)) "
    "AS e(branch text, op text, outcome text, detail text, at timestamptz)"
)
# A guarded transition and the events that came with it, in one statement.
MOVE = (
    "WITH moved AS (UPDATE global_txns SET status = :to, reason = COALESCE(:reason, reason), "
    "lease_until = COALESCE(now() + make_interval(secs => CAST(:lease AS float8)), lease_until), "
    "updated_at = now() WHERE gtid = :gtid AND status = :from RETURNING status), "
    f"logged AS ({EVENTS_FROM_JSON}) SELECT status FROM moved"
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


def _events_json(events: Sequence[Event]) -> str:
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


def txn_of(row: Mapping[Any, Any]) -> Txn:
    return Txn(
        gtid=row["gtid"],
        mode=row["mode"],
        status=row["status"],
        reason=row["reason"],
        branches=tuple(Branch(b["name"], b["payload"]) for b in row["branches"]),
        recovery_attempts=int(row["recovery_attempts"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def report_event(report: BranchReport) -> Event:
    outcome = "ok" if report.ok else report.reason or "failed"
    return Event(report.branch, report.op, outcome, report.effect)


# The advisory-lock space of msg transactions: a begin and its reports take turns (hold).
MSG_LOCKS = 7001


class TxnLog:
    """Every write is one statement in one round trip. Presumed abort: only the commit
    decision waits for its fsync; losing any other write in a crash is safe, so those are
    sent with synchronous_commit off (RELAXED).

    `bound(conn)` is the same log inside a caller's transaction (a message consumer's):
    its writes commit or roll back with the caller's."""

    def __init__(self, db: Database, conn: Connection | None = None) -> None:
        self.db = db
        self.conn = conn

    def bound(self, conn: Connection) -> TxnLog:
        return TxnLog(self.db, conn)

    def _write(self, sql: str, params: dict[str, Any], durable: bool = False) -> Any:
        """One write: the first row it returns, if any."""
        if self.conn is not None:
            result = run(self.conn, sql, params)
            return result.first() if result.returns_rows else None
        with self.db.autocommit() as conn:
            result = run(conn, sql if durable else RELAXED + sql, params)
            return result.first() if result.returns_rows else None

    def _read(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        if self.conn is not None:
            return [dict(r._mapping) for r in run(self.conn, sql, params)]
        return self.db.fetch_all(sql, **params)

    def begin(
        self,
        gtid: str,
        mode: str,
        branches: Sequence[Branch],
        lease_s: float,
        durable: bool,
        status: str = PREPARING,
    ) -> Txn | None:
        """Record a transaction (preparing, or submitted: a msg begin); None if the gtid was
        already taken.

        Only 2PC may begin without waiting for the fsync (presumed abort, and its prepared
        branches can be listed); TCC, saga and msg must know every branch they touched."""
        row = self._write(
            "INSERT INTO global_txns (gtid, mode, status, branches, lease_until) "
            "VALUES (:gtid, :mode, :status, CAST(:branches AS jsonb), "
            "now() + make_interval(secs => :lease)) ON CONFLICT (gtid) DO NOTHING "
            f"RETURNING {TXN_COLUMNS}",
            {
                "gtid": gtid,
                "mode": mode,
                "status": status,
                "branches": json.dumps([b.as_json() for b in branches]),
                "lease": lease_s,
            },
            durable,
        )
        return txn_of(row._mapping) if row else None

    def get(self, gtid: str) -> Txn | None:
        rows = self._read(f"SELECT {TXN_COLUMNS} FROM global_txns WHERE gtid = :gtid", gtid=gtid)
        return txn_of(rows[0]) if rows else None

    def resolve(self, gtid: str, mode: str) -> Txn | None:
        """The transaction; one the log never heard of is recorded presumed-aborted first, so
        a late begin with that gtid is refused (the initiator's check-back). Not so a msg
        transaction: its initiator committed it, and its begin may still be on its way."""
        if mode == "msg":
            return self.get(gtid)
        self._write(
            "INSERT INTO global_txns (gtid, mode, status, reason, branches, lease_until)"
            " VALUES (:gtid, :mode, :status, 'timeout', '[]', now()) "
            "ON CONFLICT (gtid) DO NOTHING",
            {"gtid": gtid, "mode": mode, "status": PRESUMED},
            durable=True,
        )
        txn = self.get(gtid)
        assert txn is not None, "a resolved transaction is in the log"
        return txn

    def move(
        self,
        gtid: str,
        from_status: str,
        event: str,
        *,
        reason: str | None = None,
        lease_s: float | None = None,
        events: Sequence[Event] = (),
        relaxed: bool = False,
    ) -> str | None:
        to_status = next_status(from_status, event)
        row = self._write(
            MOVE,
            {
                "gtid": gtid,
                "from": from_status,
                "to": to_status,
                "reason": reason,
                "lease": lease_s,
                "events": _events_json(events),
            },
            durable=is_durable(to_status) and not relaxed,
        )
        return str(row.status) if row is not None else None

    def postpone(self, gtid: str, delay_s: float, events: Sequence[Event] = ()) -> None:
        self._write(
            "WITH moved AS (UPDATE global_txns SET lease_until = now() + "
            "make_interval(secs => :d), updated_at = now() WHERE gtid = :gtid) " + EVENTS_FROM_JSON,
            {"gtid": gtid, "d": delay_s, "events": _events_json(events)},
        )

    def record(self, gtid: str, events: Sequence[Event]) -> None:
        if events:
            self._write(EVENTS_FROM_JSON, {"gtid": gtid, "events": _events_json(events)})

    def claim_expired(self, limit: int, lease_s: float) -> list[Txn]:
        """Unfinished transactions whose lease ran out, leased to this caller.

        SKIP LOCKED lets several coordinator processes recover at once without sharing
        a transaction."""
        with self.db.transaction() as conn:
            rows = run(
                conn,
                "UPDATE global_txns SET lease_until = now() + make_interval(secs => :lease),"
                " recovery_attempts = recovery_attempts + 1 WHERE gtid IN ("
                " SELECT gtid FROM global_txns WHERE status = ANY(:unfinished)"
                " AND lease_until < now() ORDER BY lease_until LIMIT :limit"
                f" FOR UPDATE SKIP LOCKED) RETURNING {TXN_COLUMNS}",
                {"lease": lease_s, "limit": limit, "unfinished": list(UNFINISHED)},
            ).all()
        return [txn_of(r._mapping) for r in rows]

    def statuses(self, gtids: Sequence[str]) -> dict[str, str]:
        rows = self._read(
            "SELECT gtid, status FROM global_txns WHERE gtid = ANY(:gtids)", gtids=list(gtids)
        )
        return {r["gtid"]: r["status"] for r in rows}

    # The msg mode.

    def add_report(self, report: BranchReport) -> bool:
        row = self._write(
            "WITH added AS (INSERT INTO msg_reports (gtid, branch, op, ok, reason) "
            "VALUES (:gtid, :branch, :op, :ok, :reason) ON CONFLICT DO NOTHING RETURNING op), "
            f"logged AS ({EVENTS_FROM_JSON}) SELECT count(*) AS n FROM added",
            {
                "gtid": report.gtid,
                "branch": report.branch,
                "op": report.op,
                "ok": report.ok,
                "reason": report.reason,
                "events": _events_json([report_event(report)]),
            },
        )
        return bool(row.n)

    def reports(self, gtid: str) -> list[BranchReport]:
        rows = self._read(
            "SELECT gtid, branch, op, ok, reason FROM msg_reports WHERE gtid = :gtid", gtid=gtid
        )
        return [BranchReport(r["gtid"], r["branch"], r["op"], r["ok"], r["reason"]) for r in rows]

    def hold(self, gtid: str) -> None:
        """Take the transaction's advisory lock until the caller's transaction ends."""
        self._read(
            "SELECT pg_advisory_xact_lock(:space, hashtext(:gtid))", space=MSG_LOCKS, gtid=gtid
        )

    def lock(self, gtid: str) -> Txn | None:
        rows = self._read(
            f"SELECT {TXN_COLUMNS} FROM global_txns WHERE gtid = :gtid FOR UPDATE", gtid=gtid
        )
        return txn_of(rows[0]) if rows else None

    def publish(self, routing_key: str, payload: dict[str, Any]) -> None:
        if self.conn is not None:
            enqueue(self.conn, routing_key, payload)
            return
        with self.db.transaction() as conn:
            enqueue(conn, routing_key, payload)

    # Reads for operators.

    def events(self, gtid: str) -> list[dict[str, Any]]:
        return self.db.fetch_all(
            "SELECT branch, op, outcome, detail, at FROM branch_events WHERE gtid = :gtid "
            "ORDER BY id",
            gtid=gtid,
        )

    def recent(self, wanted: TxnFilter, limit: int) -> list[Txn]:
        """The newest transactions that pass `wanted` (each criterion left None passes all)."""
        rows = self.db.fetch_all(
            f"SELECT {TXN_COLUMNS} FROM global_txns "
            "WHERE (CAST(:status AS text) IS NULL OR status = :status) "
            "AND (CAST(:mode AS text) IS NULL OR mode = :mode) "
            "AND (CAST(:min_age AS float8) IS NULL "
            "OR created_at <= now() - make_interval(secs => :min_age)) "
            "AND (CAST(:max_age AS float8) IS NULL "
            "OR created_at >= now() - make_interval(secs => :max_age)) "
            "ORDER BY created_at DESC LIMIT :limit",
            status=wanted.status,
            mode=wanted.mode,
            min_age=wanted.min_age_s,
            max_age=wanted.max_age_s,
            limit=limit,
        )
        return [txn_of(r) for r in rows]

    def unfinished_counts(self) -> dict[str, int]:
        rows = self.db.fetch_all(
            "SELECT status, count(*) AS n FROM global_txns WHERE status = ANY(:unfinished) "
            "GROUP BY status",
            unfinished=list(UNFINISHED),
        )
        return {r["status"]: int(r["n"]) for r in rows}

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

    def stuck(self, older_than_s: float) -> list[dict[str, Any]]:
        """Unfinished transactions not touched for longer than `older_than_s`."""
        rows = self.db.fetch_all(
            "SELECT gtid, status, updated_at FROM global_txns WHERE status = ANY(:unfinished) "
            "AND updated_at < now() - make_interval(secs => :h)",
            unfinished=list(UNFINISHED),
            h=older_than_s,
        )
        return [{**r, "updated_at": r["updated_at"].isoformat()} for r in rows]

    def of_mode(self, mode: str, after: str, limit: int) -> list[dict[str, Any]]:
        """A page of one mode's transactions (gtid, status), by gtid after `after`."""
        return self.db.fetch_all(
            "SELECT gtid, status FROM global_txns WHERE mode = :mode AND gtid > :after "
            "ORDER BY gtid LIMIT :limit",
            mode=mode,
            after=after,
            limit=limit,
        )

    def count(self) -> int:
        row = self.db.fetch_one("SELECT count(*) AS n FROM global_txns")
        return int(row["n"]) if row else 0
