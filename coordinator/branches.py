"""Calls to the participants' XA endpoints, each with a timeout; outcomes, never exceptions."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from paxkit.config import Settings
from paxkit.errors import ApiError
from paxkit.http import ServiceClient

log = logging.getLogger(__name__)

BRANCH_NAMES = ("order", "inventory", "coupon", "redpacket")


@dataclass(frozen=True)
class BranchResult:
    """One branch call: ok (a yes vote, or phase 2 done), else the reason."""

    branch: str
    op: str
    ok: bool
    reason: str | None = None
    detail: str | None = None


class Branches:
    def __init__(self, settings: Settings) -> None:
        self.clients = {
            name: ServiceClient(name, settings.urls[name], settings.branch_timeout_s)
            for name in BRANCH_NAMES
        }

    def known(self, name: str) -> bool:
        return name in self.clients

    def prepare(self, name: str, gtid: str, payload: dict[str, Any]) -> BranchResult:
        try:
            reply = self.clients[name].post(
                "/xa/prepare", json={"gtid": gtid, "payload": payload}, idempotent=True
            )
        except ApiError as err:
            # No answer is no vote: presumed abort treats it as a no.
            return BranchResult(name, "prepare", False, "timeout", err.message)
        if reply.ok and reply.body.get("vote") == "yes":
            return BranchResult(name, "prepare", True)
        if reply.ok:
            return BranchResult(name, "prepare", False, reply.body.get("reason") or "aborted")
        return BranchResult(name, "prepare", False, "aborted", _describe(reply.status, reply.body))

    def phase_two(self, name: str, op: str, gtid: str, reason: str | None) -> BranchResult:
        """`commit` or `rollback` one branch; idempotent on the participant's side."""
        body = {"gtid": gtid, "reason": reason}
        try:
            reply = self.clients[name].post(f"/xa/{op}", json=body, idempotent=True)
        except ApiError as err:
            return BranchResult(name, op, False, "unavailable", err.message)
        if reply.ok:
            return BranchResult(name, op, True, detail=reply.body.get("state"))
        return BranchResult(name, op, False, "refused", _describe(reply.status, reply.body))

    def prepared(self, name: str) -> list[dict[str, Any]]:
        reply = self.clients[name].get("/xa/prepared")
        if not reply.ok:
            raise ApiError(f"{name} did not list its prepared transactions", status=502)
        items: list[dict[str, Any]] = reply.body["items"]
        return items


def _describe(status: int, body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return f"{status} {body['error'].get('code')}: {body['error'].get('message')}"
    return f"{status} {body!r}"[:300]
