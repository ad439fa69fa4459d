"""The participant side of two-phase commit (XA over PREPARE TRANSACTION).

A service declares one business action per branch; this module runs it inside a local
transaction, votes by preparing (or not), and makes phase 2 idempotent:

- prepare: `BEGIN; INSERT xa_branch_log 'prepared'; <action>; PREPARE TRANSACTION gid`,
  the first three statements in one round trip.
  A business rule raises `Rejected(reason)` and the branch votes no.
- commit: `COMMIT PREPARED gid`; if it no longer exists and its log row says 'prepared',
  it was committed before (the log row only becomes visible by committing).
- rollback: `ROLLBACK PREPARED gid` if it exists, then a tombstone row, so a prepare that
  arrives late (after its rollback) collides with it and votes no instead of hanging
  onto row locks.

`POST /xa/batch` carries the commits (or rollbacks) of many transactions in one request
(paxkit/batch.py); each is the same idempotent operation as on its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg2
from flask import Blueprint, jsonify
from psycopg2 import errors as pg_errors
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError

from paxkit.batch import BatchItem, answer_each, parse_batch
from paxkit.db import Database, abort, quote_gid, run
from paxkit.errors import ApiError, InvalidInput
from paxkit.faults import Faults
from paxkit.requests_json import branch_request, json_body
from paxkit.validation import validate_gtid

log = logging.getLogger(__name__)

Action = Callable[[Connection, dict[str, Any]], None]

ROLLBACK_DEADLINE_S = 10.0
PHASE_TWO = ("commit", "rollback")
# A prepare's first round trip: open the branch's transaction, bound its lock waits, and
# log it, unless a retried prepare finds the branch prepared already (no row returned;
# the check comes first, so the insert never waits on the prepared row's lock).
BEGIN_AND_LOG = (
    "BEGIN; SELECT set_config('lock_timeout', :lock_timeout, true); "
    "INSERT INTO xa_branch_log (gid, gtid, state) SELECT :gid, :gtid, 'prepared' "
    "WHERE NOT EXISTS (SELECT 1 FROM pg_prepared_xacts WHERE gid = :gid) RETURNING gid"
)


class Rejected(Exception):
    """A business rule says no; the branch votes no with this reason."""

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(message or reason)
        self.reason = reason


# A column's own rule broken by a payload's value (a zero amount, a null): the caller's
# error, as a value of the wrong type is.
VALUE_RULES = (pg_errors.CheckViolation, pg_errors.NotNullViolation)
# A bound value whose type meets no operator or column of the statement.
MISTYPED_VALUE = pg_errors.UndefinedFunction | pg_errors.DatatypeMismatch


def apply_action(action: Action, conn: Connection, payload: dict[str, Any]) -> None:
    """Run a business action; a payload it cannot read is the caller's error (400), also
    when only the database finds a value of the wrong type in it. An effect the ledger
    already holds for the order (its key taken, under another transaction) says no."""
    try:
        action(conn, payload)
    except (KeyError, TypeError, ValueError) as err:
        raise InvalidInput("payload", f"the payload cannot be applied: {err!r}") from err
    except IntegrityError as err:
        if isinstance(err.orig, VALUE_RULES):
            raise InvalidInput("payload", f"the payload breaks a rule: {err.orig}") from err
        if not isinstance(err.orig, pg_errors.UniqueViolation):
            raise
        raise Rejected("aborted", "this order's part is held here already") from err
    except DBAPIError as err:
        if not is_unfit_value(err):
            raise
        raise InvalidInput("payload", f"the payload cannot be applied: {err.orig}") from err


def is_unfit_value(err: DBAPIError) -> bool:
    """A value the driver cannot send (no server error code: it never left), or one the
    server refused as data (SQLSTATE class 22: wrong type, out of range), or a value of
    another type than its column's (a JSON `false` for an integer id: 42883, 42804)."""
    orig = err.orig
    if isinstance(orig, psycopg2.DataError | MISTYPED_VALUE):
        return True
    return isinstance(orig, psycopg2.ProgrammingError) and getattr(orig, "pgcode", None) is None


class BranchConflict(ApiError):
    """Phase 2 asked for the opposite of what this branch already did (a protocol breach)."""

    status = 409
    code = "branch_conflict"


@dataclass(frozen=True)
class Vote:
    yes: bool
    reason: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"vote": "yes" if self.yes else "no", "reason": self.reason}


def is_lock_timeout(err: DBAPIError) -> bool:
    """The statement gave up waiting for a lock (lock_timeout) or was cancelled."""
    return isinstance(err.orig, pg_errors.LockNotAvailable | pg_errors.QueryCanceled)


def _is_missing_prepared(err: DBAPIError) -> bool:
    return isinstance(err.orig, pg_errors.UndefinedObject)


class XaBranch:
    """One service's branch of every global 2PC transaction.

    A protocol whose last phases are these (3PC's PreCommit and DoCommit, paxkit/threepc.py)
    says where it logs the branch (`begin_sql`, `state_sql`, `_bury`), which state of that
    log means committed, and which step its fault points are named after."""

    prepare_step = "prepare"  # fault points before_prepare, after_prepare
    commit_step = "commit"  # fault point before_commit
    begin_sql = BEGIN_AND_LOG
    state_sql = "SELECT state FROM xa_branch_log WHERE gid = :gid"
    committed_state = "prepared"

    def __init__(
        self,
        name: str,
        db: Database,
        action: Action,
        faults: Faults,
        lock_timeout_ms: int,
    ) -> None:
        self.name = name
        self.db = db
        self.action = action
        self.faults = faults
        self.lock_timeout_ms = lock_timeout_ms

    def gid(self, gtid: str) -> str:
        """Prepared-transaction ids are cluster-wide in Postgres, so the branch is part of it."""
        return f"{gtid}:{self.name}"

    def prepare(self, gtid: str, payload: dict[str, Any]) -> Vote:
        gid = self.gid(gtid)
        with self.db.autocommit() as conn:
            try:
                logged = run(
                    conn,
                    self.begin_sql,
                    {"gid": gid, "gtid": gtid, "lock_timeout": f"{self.lock_timeout_ms}ms"},
                ).first()
                if logged is None:
                    conn.exec_driver_sql("ROLLBACK")
                    return self._repeated(conn, gid)
                apply_action(self.action, conn, {**payload, "gtid": gtid})
                self.faults.hit(f"before_{self.prepare_step}")
                conn.exec_driver_sql(f"PREPARE TRANSACTION {quote_gid(gid)}")
            except Rejected as rejection:
                conn.exec_driver_sql("ROLLBACK")
                return Vote(False, rejection.reason)
            except IntegrityError:
                conn.exec_driver_sql("ROLLBACK")
                return self._vote_again(conn, gid)
            except DBAPIError as err:
                abort(conn)
                if is_lock_timeout(err):
                    return Vote(False, "timeout")
                raise
            except BaseException:
                abort(conn)
                raise
        self.faults.hit(f"after_{self.prepare_step}")
        return Vote(True)

    def _repeated(self, conn: Connection, gid: str) -> Vote:
        """The log step found the branch prepared already: a retried prepare, voted yes."""
        return Vote(True)

    def _vote_again(self, conn: Connection, gid: str) -> Vote:
        """A second prepare of the same branch: repeat the first vote, or no after a rollback."""
        state = self._state(conn, gid)
        return Vote(True) if state == self.committed_state else Vote(False, "aborted")

    def _state(self, conn: Connection, gid: str) -> str | None:
        state: str | None = run(conn, self.state_sql, {"gid": gid}).scalar()
        return state

    def commit(self, gtid: str) -> str:
        gid = self.gid(gtid)
        self.faults.hit(f"before_{self.commit_step}")
        with self.db.autocommit() as conn:
            if end_prepared(conn, "COMMIT", gid):
                return "committed"
            state = self._state(conn, gid)
        if state == self.committed_state:
            return "already_committed"
        raise BranchConflict(
            f"branch {gid} cannot commit: it is {state or 'unknown'}", gid=gid, state=state
        )

    def rollback(self, gtid: str) -> str:
        gid = self.gid(gtid)
        deadline = time.monotonic() + ROLLBACK_DEADLINE_S
        while True:
            with self.db.autocommit() as conn:
                end_prepared(conn, "ROLLBACK", gid)
            try:
                return self._bury(gid, gtid)
            except DBAPIError as err:
                # A prepare of this gid is still running; it will be prepared (then rolled
                # back on the next turn) or fail. Bounded by the deadline.
                if not is_lock_timeout(err) or time.monotonic() > deadline:
                    raise

    def _bury(self, gid: str, gtid: str) -> str:
        """Write the tombstone once; refuse if the branch committed."""
        with self.db.bounded_transaction(500) as conn:
            inserted = run(
                conn,
                "INSERT INTO xa_branch_log (gid, gtid, state) "
                "VALUES (:gid, :gtid, 'aborted') ON CONFLICT (gid) DO NOTHING "
                "RETURNING gid",
                {"gid": gid, "gtid": gtid},
            ).scalar()
            if inserted is None:
                state = self._state(conn, gid)
                if state == self.committed_state:
                    raise BranchConflict(
                        f"branch {gid} cannot roll back: it committed", gid=gid, state=state
                    )
        return "rolled_back"

    def prepared(self) -> list[dict[str, Any]]:
        """This branch's prepared transactions in this database, oldest first."""
        suffix = f":{self.name}"
        rows = self.db.fetch_all(
            "SELECT gid, extract(epoch FROM now() - prepared) AS age_s "
            "FROM pg_prepared_xacts WHERE database = current_database() "
            "AND right(gid, :n) = :suffix ORDER BY prepared",
            n=len(suffix),
            suffix=suffix,
        )
        return [
            {"gid": r["gid"], "gtid": r["gid"][: -len(suffix)], "age_s": float(r["age_s"])}
            for r in rows
        ]


def end_prepared(conn: Connection, verb: str, gid: str) -> bool:
    """`COMMIT PREPARED` or `ROLLBACK PREPARED` (`verb`: COMMIT or ROLLBACK) on an autocommit
    connection; False if no such transaction is prepared (it ended before)."""
    if verb not in ("COMMIT", "ROLLBACK"):
        raise ValueError(f"a prepared transaction ends by COMMIT or ROLLBACK, not {verb!r}")
    try:
        conn.exec_driver_sql(f"{verb} PREPARED {quote_gid(gid)}")
    except DBAPIError as err:
        if not _is_missing_prepared(err):
            raise
        return False
    return True


def xa_blueprint(branch: XaBranch) -> Blueprint:
    """The internal endpoints the coordinator drives."""
    bp = Blueprint("xa", __name__, url_prefix="/xa")

    @bp.post("/prepare")
    def prepare() -> Any:
        return jsonify(branch.prepare(*branch_request()).as_json())

    @bp.post("/commit")
    def commit() -> Any:
        return jsonify({"state": branch.commit(validate_gtid(json_body().get("gtid")))})

    @bp.post("/rollback")
    def rollback() -> Any:
        return jsonify({"state": branch.rollback(validate_gtid(json_body().get("gtid")))})

    @bp.post("/batch")
    def batch() -> Any:
        request = parse_batch(json_body(), PHASE_TWO)
        complete = branch.commit if request.op == "commit" else branch.rollback

        def run(item: BatchItem) -> dict[str, Any]:
            return {"state": complete(item.gtid)}

        return jsonify(answer_each(request.items, run))

    @bp.get("/prepared")
    def prepared() -> Any:
        return jsonify({"items": branch.prepared()})

    return bp
