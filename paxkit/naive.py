"""The `naive` baseline: an order's parts sent straight to the participants, no protocol.

What a team without paxmart would write, kept to measure paxmart against (issue 12): the
initiator posts each participant its part, in parallel; each participant applies it in
ONE local transaction and commits: no barrier row, no prepare, no coordinator, no log.
When one part is rejected, the parts that applied stay applied: nothing compensates them,
nothing retries, nothing recovers an order whose initiator died half way. It is UNSAFE by
design and off unless `PAXMART_NAIVE_MODE` enables it (paxkit/config.py).

The participant's action is the one its XA branch prepares (its whole part, leaving the
effect in its final state), committed on its own instead of prepared.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, jsonify
from sqlalchemy import Connection

from paxkit.barrier import APPLY, Outcome, local_outcome
from paxkit.config import Settings
from paxkit.db import Database
from paxkit.errors import ApiError
from paxkit.http import ServiceClient, component_client
from paxkit.requests_json import branch_request
from paxkit.tracing import in_current_context
from paxkit.xa import Action, apply_action

MODE = "naive"
APPLY_PATH = "/naive/apply"


class NaiveBranch:
    """A participant's side: its part of an order, applied and committed at once."""

    def __init__(self, name: str, db: Database, action: Action, lock_timeout_ms: int) -> None:
        self.name = name
        self.db = db
        self.action = action
        self.lock_timeout_ms = lock_timeout_ms

    def apply(self, gtid: str, payload: dict[str, Any]) -> Outcome:
        """Run the action in one local transaction; a business rule or a lock wait past the
        timeout rejects it (nothing of it committed), as a branch call would."""

        def work(conn: Connection) -> Outcome:
            apply_action(self.action, conn, {**payload, "gtid": gtid})
            return APPLY

        return local_outcome(self.db, self.lock_timeout_ms, work, lock_wait_rejects=True)


def naive_blueprint(branch: NaiveBranch) -> Blueprint:
    """`POST /naive/apply` `{"gtid", "payload"}`: answers like a barrier call (`ok`,
    `effect`, `reason`), 200 for a rejection too."""
    bp = Blueprint("naive", __name__)

    @bp.post(APPLY_PATH)
    def apply() -> Any:
        return jsonify(branch.apply(*branch_request()).as_json())

    return bp


@dataclass(frozen=True)
class PartResult:
    """What one participant did with its part: applied, or not and why."""

    name: str
    ok: bool
    reason: str | None = None


def first_rejection(results: Iterable[PartResult]) -> str | None:
    """The reason of the first part (in the order's declared order) that did not apply."""
    return next((r.reason or "aborted" for r in results if not r.ok), None)


class NaiveParts:
    """The initiator's side: every part posted to its participant at once, each call with
    the branch timeout and a single attempt (a retry could apply a part twice)."""

    def __init__(self, clients: dict[str, ServiceClient], pool: Executor) -> None:
        self.clients = clients
        self.pool = pool

    @classmethod
    def of(cls, settings: Settings, pool: Executor) -> NaiveParts:
        clients = {
            name: component_client(settings, name, settings.branch_timeout_s)
            for name in settings.participants
        }
        return cls(clients, pool)

    def apply(self, gtid: str, parts: dict[str, dict[str, Any]]) -> list[PartResult]:
        """Each part's result, in the order of `parts`."""
        call = in_current_context(lambda item: self._apply(gtid, *item))
        return list(self.pool.map(call, parts.items()))

    def _apply(self, gtid: str, name: str, payload: dict[str, Any]) -> PartResult:
        try:
            reply = self.clients[name].post(APPLY_PATH, json={"gtid": gtid, "payload": payload})
        except ApiError:  # no answer: whether it applied is unknown, and stays so
            return PartResult(name, False, "timeout")
        if not reply.ok or not isinstance(reply.body, dict):
            return PartResult(name, False, "aborted")
        ok = bool(reply.body.get("ok"))
        return PartResult(name, ok, None if ok else reply.body.get("reason") or "aborted")
