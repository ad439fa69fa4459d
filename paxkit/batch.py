"""Phase 2 for many transactions in one request: `POST /xa/batch` and `POST /tcc/batch`.

    {"op": "commit", "items": [{"gtid": "...", "payload": {...}, "reason": "..."}, ...]}
    -> 200 {"items": [<what the one-transaction route answers, plus "gtid">
                      or {"gtid": "...", "error": {"code", "message"}, "status": 409}, ...]}

Items answer in order; one item's protocol error (a branch conflict) is that item's
answer, not the request's. A failure of the whole (the database is down) fails the
request as the one-transaction route would: the caller retries every item, each
idempotent on its own. The coordinator builds these requests (coordinator/branches.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from paxkit.errors import ApiError, InvalidInput
from paxkit.requests_json import branch_payload
from paxkit.validation import validate_gtid

MAX_ITEMS = 100


@dataclass(frozen=True)
class BatchItem:
    """One transaction's phase-2 operation on this branch."""

    gtid: str
    payload: dict[str, Any]
    reason: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"gtid": self.gtid, "payload": self.payload, "reason": self.reason}


@dataclass(frozen=True)
class BatchRequest:
    op: str
    items: tuple[BatchItem, ...]


def parse_batch(body: dict[str, Any], ops: Sequence[str]) -> BatchRequest:
    """The batch in a request body, or a 400 naming what is wrong."""
    op = body.get("op")
    if op not in ops:
        raise InvalidInput("op", f"op must be one of {', '.join(ops)}")
    raw = body.get("items")
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_ITEMS:
        raise InvalidInput("items", f"items must be a list of 1 to {MAX_ITEMS} objects")
    return BatchRequest(str(op), tuple(_item(entry) for entry in raw))


def _item(entry: Any) -> BatchItem:
    if not isinstance(entry, dict):
        raise InvalidInput("items", "every item must be an object")
    reason = entry.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise InvalidInput("reason", "reason must be a string")
    return BatchItem(validate_gtid(entry.get("gtid")), branch_payload(entry), reason)


def answer_each(
    items: Sequence[BatchItem], run: Callable[[BatchItem], dict[str, Any]]
) -> dict[str, Any]:
    """Run every item; an item's own protocol error becomes its answer."""
    answers = []
    for item in items:
        try:
            answers.append({"gtid": item.gtid, **run(item)})
        except ApiError as err:
            answers.append({"gtid": item.gtid, "status": err.status, **err.body()})
    return {"items": answers}
