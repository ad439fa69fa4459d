"""The barrier: makes every TCC and saga branch call safe to repeat, reorder and lose.

Each call runs in one local transaction that first inserts its barrier row and then does
the business change, so the row exists exactly when the change happened:

- a duplicate call finds its row and does nothing (idempotence);
- a compensation (Cancel / saga compensate) first inserts the row of the forward operation
  it undoes; if that insert succeeds, the forward operation never ran, so the compensation
  is an empty success (null compensation) and the row it left blocks the forward
  operation should it still arrive (anti-hanging);
- a forward operation that finds its row written by a compensation refuses to run.

`POST /tcc/batch` runs the Confirms (or Cancels) of many transactions in one local
transaction, one commit for all of them (paxkit/batch.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, jsonify
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from paxkit.batch import BatchItem, answer_each, parse_batch
from paxkit.db import Database, run
from paxkit.errors import InvalidInput
from paxkit.faults import Faults
from paxkit.requests_json import branch_request, json_body
from paxkit.xa import Rejected, apply_action, is_lock_timeout

log = logging.getLogger(__name__)

Action = Callable[[Connection, dict[str, Any]], None]

FORWARD_OF = {"cancel": "try", "compensate": "action"}
BATCHED_OPS = ("confirm", "cancel")
PROTOCOL_OPS = {"tcc": ("try", "confirm", "cancel"), "saga": ("action", "compensate")}


@dataclass(frozen=True)
class TccActions:
    """A service's TCC trio: reserve, make permanent, release."""

    try_: Action
    confirm: Action
    cancel: Action


@dataclass(frozen=True)
class SagaActions:
    """A service's saga step: the forward action and its compensation."""

    action: Action
    compensate: Action


@dataclass(frozen=True)
class Outcome:
    """What a barrier-guarded call did: ran, duplicate, null (compensation), refused."""

    ok: bool
    effect: str
    reason: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "effect": self.effect, "reason": self.reason}


@dataclass(frozen=True)
class BarrierRows:
    """What a call found when it claimed its barrier rows: whether it inserted its own row
    (else who wrote it) and, for a compensation, whether it inserted the row of the forward
    operation it undoes (then that operation never ran)."""

    own_new: bool
    forward_new: bool = False
    own_writer: str | None = None


APPLY = Outcome(True, "applied")
DUPLICATE = Outcome(True, "duplicate")
NULL_COMPENSATION = Outcome(True, "null")
HANGING = Outcome(False, "refused", "aborted")


def barrier_verdict(op: str, rows: BarrierRows) -> Outcome:
    """The barrier's decision table: what a call of `op` does, given its barrier rows.

    | call         | own row new | forward row new | own row written by | verdict   |
    |--------------|-------------|-----------------|--------------------|-----------|
    | forward      | yes         | -               | -                  | apply     |
    | forward      | no          | -               | itself             | duplicate |
    | forward      | no          | -               | a compensation     | refused   |
    | compensation | yes         | no              | -                  | apply     |
    | compensation | yes         | yes             | -                  | null      |
    | compensation | no          | any             | -                  | duplicate |
    """
    if op in FORWARD_OF:
        if not rows.own_new:
            return DUPLICATE
        return NULL_COMPENSATION if rows.forward_new else APPLY
    if rows.own_new:
        return APPLY
    return DUPLICATE if rows.own_writer == op else HANGING


class BarrierBranch:
    """One service's branch of every TCC and saga transaction."""

    def __init__(
        self,
        name: str,
        db: Database,
        faults: Faults,
        lock_timeout_ms: int,
        tcc: TccActions | None = None,
        saga: SagaActions | None = None,
    ) -> None:
        self.name = name
        self.db = db
        self.faults = faults
        self.lock_timeout_ms = lock_timeout_ms
        self.actions: dict[str, Action] = {}
        if tcc is not None:
            self.actions.update(try_=tcc.try_, confirm=tcc.confirm, cancel=tcc.cancel)
            self.actions["try"] = self.actions.pop("try_")
        if saga is not None:
            self.actions.update(action=saga.action, compensate=saga.compensate)

    def call(self, op: str, gtid: str, payload: dict[str, Any]) -> Outcome:
        """Run `op` for `gtid` at most once, in one local transaction with its barrier."""
        self.faults.hit(f"before_{op}")
        outcome = self._run(op, gtid, payload)
        self.faults.hit(f"after_{op}")
        return outcome

    def call_many(self, op: str, items: Sequence[BatchItem]) -> list[Outcome]:
        """Run `op` for many transactions in one local transaction (one commit for all). A
        completion is not meant to say no: if one does, each runs on its own instead, so
        that only that one says no. A failure of the whole fails every one."""
        for _ in items:
            self.faults.hit(f"before_{op}")
        try:
            with self.db.bounded_transaction(self.lock_timeout_ms) as conn:
                outcomes = [self._guarded(conn, op, item.gtid, item.payload) for item in items]
        except Rejected:
            outcomes = [self._run(op, item.gtid, item.payload) for item in items]
        for _ in items:
            self.faults.hit(f"after_{op}")
        return outcomes

    def _run(self, op: str, gtid: str, payload: dict[str, Any]) -> Outcome:
        return local_outcome(
            self.db,
            self.lock_timeout_ms,
            lambda conn: self._guarded(conn, op, gtid, payload),
            lock_wait_rejects=op in FORWARD_OF.values(),
        )

    def within(self, conn: Connection, op: str, gtid: str, payload: dict[str, Any]) -> Outcome:
        """Run `op` inside the caller's transaction (a message handler's), in a savepoint so
        a business rejection undoes only this branch's change."""
        savepoint = conn.begin_nested()
        try:
            outcome = self._guarded(conn, op, gtid, payload)
        except Rejected as rejection:
            savepoint.rollback()
            return Outcome(False, "rejected", rejection.reason)
        savepoint.commit()
        return outcome

    def _guarded(self, conn: Connection, op: str, gtid: str, payload: dict[str, Any]) -> Outcome:
        verdict = barrier_verdict(op, self._rows(conn, op, gtid))
        if verdict == NULL_COMPENSATION:
            log.info(
                "null compensation %s of %s", op, gtid, extra={"gtid": gtid, "branch": self.name}
            )
        elif verdict == HANGING:
            log.warning(
                "hanging %s of %s refused: it was compensated already",
                op,
                gtid,
                extra={"gtid": gtid, "branch": self.name},
            )
        elif verdict == APPLY:
            apply_action(self.actions[op], conn, {**payload, "gtid": gtid})
        return verdict

    def _rows(self, conn: Connection, op: str, gtid: str) -> BarrierRows:
        """Claim the rows a call needs and read what was there (in the call's transaction)."""
        forward = FORWARD_OF.get(op)
        if forward is not None:  # a compensation also claims the row of what it undoes
            forward_new = self._insert(conn, gtid, forward, written_by=op)
            return BarrierRows(
                own_new=self._insert(conn, gtid, op, written_by=op), forward_new=forward_new
            )
        if self._insert(conn, gtid, op, written_by=op):
            return BarrierRows(own_new=True)
        return BarrierRows(own_new=False, own_writer=self._written_by(conn, gtid, op))

    def _insert(self, conn: Connection, gtid: str, op: str, written_by: str) -> bool:
        return insert_barrier(conn, gtid, self.name, op, written_by)

    def _written_by(self, conn: Connection, gtid: str, op: str) -> str | None:
        return barrier_writer(conn, gtid, self.name, op)


def local_outcome(
    db: Database,
    lock_timeout_ms: int,
    work: Callable[[Connection], Outcome],
    lock_wait_rejects: bool,
) -> Outcome:
    """`work` in one bounded local transaction. A business rejection, or, for an operation
    allowed to say no, a lock wait past the timeout, is a refusal with nothing committed."""
    try:
        with db.bounded_transaction(lock_timeout_ms) as conn:
            return work(conn)
    except Rejected as rejection:
        return Outcome(False, "rejected", rejection.reason)
    except DBAPIError as err:
        if lock_wait_rejects and is_lock_timeout(err):
            return Outcome(False, "rejected", "timeout")
        raise


def insert_barrier(conn: Connection, gtid: str, branch: str, op: str, written_by: str) -> bool:
    """Claim the barrier row of (gtid, branch, op); False if someone wrote it first."""
    inserted = run(
        conn,
        "INSERT INTO barrier (gtid, branch, op, written_by) "
        "VALUES (:gtid, :branch, :op, :by) ON CONFLICT DO NOTHING RETURNING op",
        {"gtid": gtid, "branch": branch, "op": op, "by": written_by},
    ).scalar()
    return inserted is not None


def barrier_writer(conn: Connection, gtid: str, branch: str, op: str) -> str | None:
    """Who wrote the barrier row of (gtid, branch, op), if it exists."""
    written_by: str | None = run(
        conn,
        "SELECT written_by FROM barrier WHERE gtid = :gtid AND branch = :branch AND op = :op",
        {"gtid": gtid, "branch": branch, "op": op},
    ).scalar()
    return written_by


def barrier_blueprint(branch: BarrierBranch) -> Blueprint:
    """`POST /tcc/<op>` and `POST /saga/<op>` for the operations the service declared."""
    bp = Blueprint("barrier", __name__)

    def handle(protocol: str, op: str) -> Any:
        if op not in PROTOCOL_OPS[protocol] or op not in branch.actions:
            raise InvalidInput("op", f"{protocol} has no operation {op!r} here")
        return jsonify(branch.call(op, *branch_request()).as_json())

    def batch() -> Any:
        request = parse_batch(json_body(), [op for op in BATCHED_OPS if op in branch.actions])
        outcomes = iter(branch.call_many(request.op, request.items))
        return jsonify(answer_each(request.items, lambda _: next(outcomes).as_json()))

    bp.add_url_rule("/tcc/batch", "tcc_batch", batch, methods=["POST"])
    bp.add_url_rule("/tcc/<op>", "tcc", lambda op: handle("tcc", op), methods=["POST"])
    bp.add_url_rule("/saga/<op>", "saga", lambda op: handle("saga", op), methods=["POST"])
    return bp
