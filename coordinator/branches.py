"""Calls to the participants' protocol endpoints, each with a timeout; outcomes, never
exceptions.

Phase 2 (2PC commit/rollback, TCC confirm/cancel) of concurrent transactions is grouped
per participant: while one such request to a participant is in flight, the next ones
gather and leave as one `POST /xa/batch` or `/tcc/batch` (paxkit/coalesce.py,
paxkit/batch.py). The forward phase stays one call per branch, all in parallel.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from coordinator.ports import BranchResult
from paxkit.batch import MAX_ITEMS, BatchItem
from paxkit.coalesce import GroupCall, WaitedTooLong
from paxkit.config import Settings
from paxkit.errors import ApiError
from paxkit.http import component_client
from paxkit.metrics import BRANCH_BATCH

log = logging.getLogger(__name__)

# (mode, op) sent in batches, and the route that takes them.
BATCHED = {
    ("2pc", "commit"): "/xa/batch",
    ("2pc", "rollback"): "/xa/batch",
    ("tcc", "confirm"): "/tcc/batch",
    ("tcc", "cancel"): "/tcc/batch",
}
BatchKey = tuple[str, str, str]  # (participant, mode, op)


class Branches:
    """The stack's participants (an initiator is no branch of the transactions it starts)."""

    def __init__(self, settings: Settings) -> None:
        self.names = settings.participants
        self.clients = {
            name: component_client(settings, name, settings.branch_timeout_s) for name in self.names
        }
        # A waiter may see its batch wait behind one in flight: two calls' time at most.
        self.phase_two: GroupCall[BatchKey, BatchItem, BranchResult] = GroupCall(
            self._send_batch, MAX_ITEMS, wait_s=2 * settings.branch_timeout_s + 1
        )

    def known(self, name: str) -> bool:
        return name in self.clients

    def call(
        self,
        mode: str,
        op: str,
        name: str,
        gtid: str,
        payload: dict[str, Any],
        reason: str | None = None,
    ) -> BranchResult:
        """One protocol operation on one branch; every one of them is idempotent there."""
        if (mode, op) in BATCHED:
            return self._in_batch((name, mode, op), BatchItem(gtid, payload, reason))
        path, body = _request(mode, op, gtid, payload, reason)
        try:
            reply = self.clients[name].post(path, json=body, idempotent=True)
        except ApiError as err:
            # No answer: a forward step counts as a no vote (presumed abort); a completion
            # step is simply not done yet.
            return BranchResult(
                name, op, False, "timeout" if op in FORWARD else "unavailable", err.message
            )
        if not reply.ok:
            return BranchResult(
                name,
                op,
                False,
                "aborted" if op in FORWARD else "refused",
                _describe(reply.status, reply.body),
            )
        return _result(name, op, reply.body)

    def _in_batch(self, key: BatchKey, item: BatchItem) -> BranchResult:
        name, _, op = key
        try:
            return self.phase_two.call(key, item)
        except (ApiError, WaitedTooLong) as err:  # not done yet: recovery carries it out
            return BranchResult(name, op, False, "unavailable", str(err))

    def _send_batch(self, key: BatchKey, items: Sequence[BatchItem]) -> list[BranchResult]:
        """One request with the phase-2 operation of many transactions on one branch."""
        name, mode, op = key
        BRANCH_BATCH.labels(name, op).observe(len(items))
        body = {"op": op, "items": [item.as_json() for item in items]}
        reply = self.clients[name].post(BATCHED[(mode, op)], json=body, idempotent=True)
        answers = reply.body.get("items") if reply.ok and isinstance(reply.body, dict) else None
        if not isinstance(answers, list) or len(answers) != len(items):
            refused = _describe(reply.status, reply.body)
            return [BranchResult(name, op, False, "refused", refused) for _ in items]
        return [_item_result(name, op, answer) for answer in answers]

    def prepared(self, name: str) -> list[dict[str, Any]]:
        reply = self.clients[name].get("/xa/prepared")
        if not reply.ok:
            raise ApiError(f"{name} did not list its prepared transactions", status=503)
        items: list[dict[str, Any]] = reply.body["items"]
        return items


# Steps whose missing answer is a no vote; 3PC's PreCommit too (a missing ack aborts).
FORWARD = ("prepare", "try", "action", "cancommit", "precommit")


def _request(
    mode: str, op: str, gtid: str, payload: dict[str, Any], reason: str | None
) -> tuple[str, dict[str, Any]]:
    if mode == "2pc":
        if op == "prepare":
            return "/xa/prepare", {"gtid": gtid, "payload": payload}
        return f"/xa/{op}", {"gtid": gtid, "reason": reason}
    return f"/{mode}/{op}", {"gtid": gtid, "payload": payload}


def _result(name: str, op: str, body: dict[str, Any]) -> BranchResult:
    if "vote" in body:  # an XA prepare
        yes = body["vote"] == "yes"
        return BranchResult(name, op, yes, None if yes else body.get("reason") or "aborted")
    if "ok" in body:  # a barrier-guarded TCC/saga call
        ok = bool(body["ok"])
        return BranchResult(
            name, op, ok, None if ok else body.get("reason") or "aborted", body.get("effect")
        )
    return BranchResult(name, op, True, detail=body.get("state"))  # XA commit/rollback


def _item_result(name: str, op: str, answer: Any) -> BranchResult:
    """One transaction's answer in a batch: as its own call's, or its own error."""
    if not isinstance(answer, dict) or "error" in answer:
        status = answer.get("status", 200) if isinstance(answer, dict) else 200
        return BranchResult(name, op, False, "refused", _describe(status, answer))
    return _result(name, op, answer)


def _describe(status: int, body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return f"{status} {body['error'].get('code')}: {body['error'].get('message')}"
    return f"{status} {body!r}"[:300]
