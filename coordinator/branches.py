"""Calls to the participants' protocol endpoints, each with a timeout; outcomes, never
exceptions."""

from __future__ import annotations

import logging
from typing import Any

from coordinator.ports import BranchResult
from paxkit.config import Settings
from paxkit.errors import ApiError
from paxkit.http import component_client

log = logging.getLogger(__name__)


class Branches:
    """The stack's participants (an initiator is no branch of the transactions it starts)."""

    def __init__(self, settings: Settings) -> None:
        self.names = settings.participants
        self.clients = {
            name: component_client(settings, name, settings.branch_timeout_s) for name in self.names
        }

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

    def prepared(self, name: str) -> list[dict[str, Any]]:
        reply = self.clients[name].get("/xa/prepared")
        if not reply.ok:
            raise ApiError(f"{name} did not list its prepared transactions", status=503)
        items: list[dict[str, Any]] = reply.body["items"]
        return items


FORWARD = ("prepare", "try", "action")


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


def _describe(status: int, body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return f"{status} {body['error'].get('code')}: {body['error'].get('message')}"
    return f"{status} {body!r}"[:300]
