"""The participant side of three-phase commit (mode `3pc`): CanCommit, PreCommit, DoCommit,
Abort, and the participant's own timeouts.

Its last two phases are XA on Postgres (paxkit/xa.py): PreCommit is a prepare, DoCommit a
commit, Abort a rollback. What 3PC adds is a first round that holds nothing, and a rule for
a participant its coordinator stops talking to:

- CanCommit: run the action and roll it back (can it apply now?), and record the yes vote
  in `threepc_branches` as `uncertain`, with the deadline of its PreCommit
  (`PAXMART_3PC_UNCERTAIN_TIMEOUT_S`). A business rule or a lock wait votes no.
- PreCommit: in one local transaction, move that row `uncertain` -> `committed` (visible
  only once the branch commits, as xa_branch_log's row is), run the action, `PREPARE
  TRANSACTION`. Refused once its deadline passed or after an Abort; a retry acks again.
- DoCommit: `COMMIT PREPARED`, idempotent. Abort: `ROLLBACK PREPARED`, then the row
  `aborted` (a tombstone where no CanCommit came, so a late one votes no).
- The timeouts (`run_timeouts`, a loop of the participant's worker process): an uncertain
  branch past its deadline aborts on its own; a precommitted one that heard neither
  DoCommit nor Abort within `PAXMART_3PC_PRECOMMIT_TIMEOUT_S` of its PreCommit commits on
  its own. Both are recorded `by_timeout`.

That second rule is what makes 3PC non-blocking, and what makes it unsafe under a
partition: a branch cut off after its PreCommit commits by its timeout while the
coordinator, missing its ack, aborts the others. An Abort that arrives after that finds the
branch committed and says so (`committed_by_timeout`); the coordinator's audit reports the
split (`threepc_split`). So the mode is off unless `PAXMART_3PC_MODE` enables it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, jsonify
from psycopg2 import errors as pg_errors
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from paxkit.barrier import Outcome, local_outcome
from paxkit.db import run
from paxkit.errors import InvalidInput
from paxkit.requests_json import branch_request, json_body
from paxkit.validation import validate_gtid
from paxkit.xa import Vote, XaBranch, apply_action, end_prepared

log = logging.getLogger(__name__)

MODE = "3pc"
OPS = ("cancommit", "precommit", "docommit", "abort")  # POST /3pc/<op>
UNCERTAIN, COMMITTED, ABORTED = "uncertain", "committed", "aborted"
COMMITTED_BY_TIMEOUT = "committed_by_timeout"
# What an Abort answers from a branch that committed on its own before it came: a split.
SPLIT_STATES = (COMMITTED, COMMITTED_BY_TIMEOUT)
TIMEOUT_BATCH = 100
MAX_AUDIT_GTIDS = 1000

# PreCommit's first round trip: open the branch's transaction, bound its lock waits, and
# claim its uncertain row, unless the deadline passed, an Abort buried it, or a retried
# PreCommit finds the branch prepared already (checked first, so it never waits on the
# prepared row's lock).
PRECOMMIT = (
    "BEGIN; SELECT set_config('lock_timeout', :lock_timeout, true); "
    "UPDATE threepc_branches SET state = 'committed' WHERE gid = :gid AND state = 'uncertain' "
    "AND deadline > now() AND NOT EXISTS (SELECT 1 FROM pg_prepared_xacts WHERE gid = :gid) "
    "RETURNING gid"
)
FOUND = (
    "SELECT state, by_timeout, deadline <= now() AS expired, "
    "EXISTS (SELECT 1 FROM pg_prepared_xacts WHERE gid = :gid) AS precommitted "
    "FROM threepc_branches WHERE gid = :gid"
)
RECORD_YES = (
    "INSERT INTO threepc_branches (gid, gtid, state, deadline) "
    "VALUES (:gid, :gtid, 'uncertain', now() + make_interval(secs => :timeout_s)) "
    "ON CONFLICT (gid) DO NOTHING RETURNING gid"
)
# A tombstone, or an uncertain branch aborted; a committed one is left as it is.
BURY = (
    "INSERT INTO threepc_branches (gid, gtid, state, deadline) "
    "VALUES (:gid, :gtid, 'aborted', now()) ON CONFLICT (gid) DO UPDATE SET state = 'aborted' "
    "WHERE threepc_branches.state = 'uncertain' RETURNING state"
)
# Uncertain past the deadline; a row a PreCommit holds (in flight, or prepared) is skipped:
# that branch precommitted, and its own transaction decides the row.
EXPIRE_UNCERTAIN = (
    "UPDATE threepc_branches SET state = 'aborted', by_timeout = true WHERE gid = ANY(ARRAY("
    "SELECT gid FROM threepc_branches WHERE state = 'uncertain' AND deadline < now() "
    "ORDER BY deadline LIMIT :batch FOR UPDATE SKIP LOCKED)) RETURNING gtid"
)
OVERDUE_PRECOMMITS = (
    "SELECT b.gid, b.gtid FROM pg_prepared_xacts p JOIN threepc_branches b ON b.gid = p.gid "
    "WHERE p.database = current_database() "
    "AND p.prepared < now() - make_interval(secs => :timeout_s) ORDER BY p.prepared LIMIT :batch"
)
MARK_COMMITTED_BY_TIMEOUT = (
    "UPDATE threepc_branches SET by_timeout = true WHERE gid = :gid AND state = 'committed'"
)
STATES_OF = "SELECT gtid, state, by_timeout FROM threepc_branches WHERE gtid = ANY(:gtids)"
VOTED_YES = Outcome(True, UNCERTAIN)


@dataclass(frozen=True)
class Timeouts:
    """A participant's own deadlines: for a yes vote to hear its PreCommit, for a
    precommitted branch to hear DoCommit or Abort."""

    uncertain_s: float
    precommit_s: float


@dataclass(frozen=True)
class Found:
    """What a branch's row says when a call comes again, or too late."""

    state: str
    by_timeout: bool = False
    expired: bool = False  # its PreCommit deadline passed
    precommitted: bool = False  # its PreCommit is prepared, not committed yet


def repeated_vote(found: Found | None, precommit: bool) -> Vote:
    """What a CanCommit or PreCommit of a branch that already has a row answers: yes while
    it can commit (precommitted, committed; a CanCommit also while uncertain within its
    deadline), no once it aborted or timed out, and no for a PreCommit without CanCommit."""
    if found is None:
        return Vote(False, "aborted")
    if found.precommitted or found.state == COMMITTED:
        return Vote(True)
    if found.state == ABORTED:
        return Vote(False, "timeout" if found.by_timeout else "aborted")
    if found.expired:
        return Vote(False, "timeout")
    return Vote(False, "aborted") if precommit else Vote(True)


@dataclass(frozen=True)
class BranchState:
    """A branch's final word on one transaction, for the audit."""

    state: str
    by_timeout: bool

    def as_json(self) -> dict[str, Any]:
        return {"state": self.state, "by_timeout": self.by_timeout}


class ThreePhaseBranch(XaBranch):
    """One service's branch of every 3PC transaction: PreCommit is its prepare, DoCommit its
    commit, Abort its rollback, logged in threepc_branches under a gid of its own (so that
    neither the XA branch nor the coordinator's sweep of orphaned XA branches takes it)."""

    prepare_step = "precommit"  # fault points before_precommit, after_precommit
    commit_step = "docommit"  # fault point before_docommit
    begin_sql = PRECOMMIT
    state_sql = "SELECT state FROM threepc_branches WHERE gid = :gid"
    committed_state = COMMITTED

    def __init__(self, xa: XaBranch, timeouts: Timeouts) -> None:
        """The 3PC branch of the service, database and action of its XA branch `xa`."""
        super().__init__(xa.name, xa.db, xa.action, xa.faults, xa.lock_timeout_ms)
        self.timeouts = timeouts

    def gid(self, gtid: str) -> str:
        return f"{gtid}:{self.name}:{MODE}"

    def can_commit(self, gtid: str, payload: dict[str, Any]) -> Outcome:
        """Vote: yes if the action applies now (tried, then rolled back), recorded uncertain
        until the PreCommit deadline; a retried CanCommit answers as the branch stands."""
        self.faults.hit("before_cancommit")
        outcome = local_outcome(
            self.db,
            self.lock_timeout_ms,
            lambda conn: self._vote(conn, gtid, payload),
            lock_wait_rejects=True,
        )
        self.faults.hit("after_cancommit")
        return outcome

    def _vote(self, conn: Connection, gtid: str, payload: dict[str, Any]) -> Outcome:
        gid = self.gid(gtid)
        found = self._found(conn, gid)
        if found is None:
            conn.exec_driver_sql("SAVEPOINT cancommit")
            apply_action(self.action, conn, {**payload, "gtid": gtid})
            conn.exec_driver_sql("ROLLBACK TO SAVEPOINT cancommit")
            params = {"gid": gid, "gtid": gtid, "timeout_s": self.timeouts.uncertain_s}
            if run(conn, RECORD_YES, params).first() is not None:
                return VOTED_YES
            found = self._found(conn, gid)  # a copy of this call, or an Abort, came first
        vote = repeated_vote(found, precommit=False)
        return Outcome(vote.yes, "duplicate" if vote.yes else "refused", vote.reason)

    def _found(self, conn: Connection, gid: str) -> Found | None:
        row = run(conn, FOUND, {"gid": gid}).first()
        return Found(**row._mapping) if row is not None else None

    def _repeated(self, conn: Connection, gid: str) -> Vote:
        """PreCommit found no uncertain row to claim: ack again, or say why not."""
        return repeated_vote(self._found(conn, gid), precommit=True)

    def _vote_again(self, conn: Connection, gid: str) -> Vote:
        return self._repeated(conn, gid)

    def abort(self, gtid: str) -> str:
        self.faults.hit("before_abort")
        return self.rollback(gtid)

    def _bury(self, gid: str, gtid: str) -> str:
        """The branch aborted (a tombstone where no CanCommit came); one that committed on
        its own before this Abort came stays committed, and the answer says so."""
        with self.db.bounded_transaction(500) as conn:
            if run(conn, BURY, {"gid": gid, "gtid": gtid}).first() is not None:
                return "rolled_back"
            found = self._found(conn, gid)
        if found is None or found.state == ABORTED:
            return "rolled_back"
        log.error(
            "3pc branch %s got an Abort after it committed (on its own, by its timeout): a split",
            gid,
            extra={"gtid": gtid, "branch": self.name},
        )
        return COMMITTED_BY_TIMEOUT if found.by_timeout else COMMITTED

    def run_timeouts(self) -> dict[str, int]:
        """One pass of the participant's own decisions (its worker's loop)."""
        return {"aborted": self.expire_uncertain(), "committed": self.commit_overdue()}

    def expire_uncertain(self) -> int:
        """Abort every branch whose PreCommit did not come by its deadline."""
        with self.db.autocommit() as conn:
            expired = run(conn, EXPIRE_UNCERTAIN, {"batch": TIMEOUT_BATCH}).all()
        for row in expired:
            log.warning(
                "3pc branch of %s aborted on its own: no PreCommit within %gs",
                row.gtid,
                self.timeouts.uncertain_s,
                extra={"gtid": row.gtid, "branch": self.name},
            )
        return len(expired)

    def commit_overdue(self) -> int:
        """Commit every precommitted branch that heard neither DoCommit nor Abort in time."""
        overdue = self.db.fetch_all(
            OVERDUE_PRECOMMITS, timeout_s=self.timeouts.precommit_s, batch=TIMEOUT_BATCH
        )
        return sum(self._commit_by_timeout(row["gid"], row["gtid"]) for row in overdue)

    def _commit_by_timeout(self, gid: str, gtid: str) -> int:
        """COMMIT PREPARED, then the mark (a crash in between loses only the mark); nothing
        if a DoCommit or an Abort ended it first, or is ending it right now."""
        with self.db.autocommit() as conn:
            try:
                if not end_prepared(conn, "COMMIT", gid):
                    return 0
            except DBAPIError as err:
                if not isinstance(err.orig, pg_errors.ObjectNotInPrerequisiteState):
                    raise
                return 0  # busy: a DoCommit or an Abort is ending it right now
            run(conn, MARK_COMMITTED_BY_TIMEOUT, {"gid": gid})
        log.warning(
            "3pc branch of %s committed on its own: no DoCommit or Abort within %gs",
            gtid,
            self.timeouts.precommit_s,
            extra={"gtid": gtid, "branch": self.name},
        )
        return 1

    def states(self, gtids: Sequence[str]) -> dict[str, BranchState]:
        """This branch's word on each of these transactions it has a row for."""
        rows = self.db.fetch_all(STATES_OF, gtids=list(gtids))
        return {r["gtid"]: BranchState(r["state"], r["by_timeout"]) for r in rows}


def threepc_blueprint(branch: ThreePhaseBranch) -> Blueprint:
    """The endpoints the coordinator drives: `{"gtid", "payload"}` each, every one
    idempotent. CanCommit answers `{"ok", "effect", "reason"}`, PreCommit a vote, DoCommit
    and Abort `{"state"}`."""
    bp = Blueprint("threepc", __name__, url_prefix=f"/{MODE}")

    @bp.post("/cancommit")
    def can_commit() -> Any:
        return jsonify(branch.can_commit(*branch_request()).as_json())

    @bp.post("/precommit")
    def pre_commit() -> Any:
        return jsonify(branch.prepare(*branch_request()).as_json())

    @bp.post("/docommit")
    def do_commit() -> Any:
        gtid, _ = branch_request()
        return jsonify({"state": branch.commit(gtid)})

    @bp.post("/abort")
    def abort() -> Any:
        gtid, _ = branch_request()
        return jsonify({"state": branch.abort(gtid)})

    return bp


def threepc_audit_blueprint(branch: ThreePhaseBranch) -> Blueprint:
    """`POST /audit/3pc {"gtids": [...]}`: this branch's state in each, for the coordinator's
    search of split outcomes. Served whether or not the mode is on (a read)."""
    bp = Blueprint("threepc_audit", __name__, url_prefix="/audit")

    @bp.post(f"/{MODE}")
    def states() -> Any:
        gtids = json_body().get("gtids")
        if not isinstance(gtids, list) or not 1 <= len(gtids) <= MAX_AUDIT_GTIDS:
            raise InvalidInput("gtids", f"gtids must be a list of 1 to {MAX_AUDIT_GTIDS} gtids")
        found = branch.states([validate_gtid(g) for g in gtids])
        return jsonify({"branches": {g: s.as_json() for g, s in found.items()}})

    return bp


def threepc_refused() -> InvalidInput:
    """400 `unsupported_mode`: the stack does not enable three-phase commit."""
    return InvalidInput(
        "mode",
        "mode 3pc (three-phase commit: a partition can commit one branch and abort another) "
        "is off here; PAXMART_3PC_MODE=1 enables it",
        code="unsupported_mode",
    )
