"""What the dashboard shows, as typed records: the coordinator's answers (transactions,
dead letters, the audit) and the control plane's change log, each parsed once here."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from paxkit.errors import ApiError
from paxkit.http import Reply


def answered(reply: Reply) -> dict[str, Any]:
    """The body of a successful answer; an error answer is passed on as it came."""
    body: dict[str, Any] = reply.body if isinstance(reply.body, dict) else {}
    if reply.ok:
        return body
    error = body.get("error")
    error = error if isinstance(error, dict) else {}
    raise ApiError(
        str(error.get("message", f"The coordinator answered {reply.status}.")),
        code=str(error.get("code", "upstream_error")),
        status=reply.status,
    )


@dataclass(frozen=True)
class TxnRow:
    gtid: str
    mode: str
    status: str
    reason: str | None
    branches: tuple[str, ...]
    recovery_attempts: int
    created_at: str
    updated_at: str

    @classmethod
    def of(cls, item: Mapping[str, Any]) -> TxnRow:
        return cls(
            gtid=str(item["gtid"]),
            mode=str(item["mode"]),
            status=str(item["status"]),
            reason=item.get("reason"),
            branches=tuple(str(b["name"]) for b in item.get("branches", [])),
            recovery_attempts=int(item.get("recovery_attempts", 0)),
            created_at=str(item["created_at"]),
            updated_at=str(item["updated_at"]),
        )


@dataclass(frozen=True)
class TimelineEvent:
    at: str
    branch: str
    op: str
    outcome: str
    detail: str | None

    @classmethod
    def of(cls, item: Mapping[str, Any]) -> TimelineEvent:
        return cls(
            str(item["at"]),
            str(item["branch"]),
            str(item["op"]),
            str(item["outcome"]),
            item.get("detail"),
        )


def transactions(body: Mapping[str, Any]) -> list[TxnRow]:
    return [TxnRow.of(item) for item in body.get("items", [])]


def timeline(body: Mapping[str, Any]) -> list[TimelineEvent]:
    return [TimelineEvent.of(item) for item in body.get("timeline", [])]


@dataclass(frozen=True)
class DeadLetterRow:
    id: str
    component: str
    queue: str
    message_id: str | None
    routing_key: str
    body: str
    reason: str
    attempts: int
    dead_at: str


@dataclass(frozen=True)
class DeadLetterList:
    items: list[DeadLetterRow]
    total: int
    unavailable: list[str]


def dead_letters(body: Mapping[str, Any]) -> DeadLetterList:
    fields = DeadLetterRow.__dataclass_fields__
    items = [
        DeadLetterRow(**{k: v for k, v in item.items() if k in fields}) for item in body["items"]
    ]
    return DeadLetterList(items, int(body["total"]), list(body.get("unavailable", [])))


@dataclass(frozen=True)
class Violation:
    """One finding of the audit: its check and the rest of what it names, as text."""

    check: str
    details: list[tuple[str, str]]


@dataclass(frozen=True)
class AuditResult:
    ok: bool
    violations: list[Violation]
    checked: dict[str, int]


def audit(body: Mapping[str, Any]) -> AuditResult:
    violations = [
        Violation(
            str(item.get("check", "?")),
            [(str(k), _text(v)) for k, v in item.items() if k != "check"],
        )
        for item in body.get("violations", [])
    ]
    checked = {str(k): int(v) for k, v in body.get("checked", {}).items()}
    return AuditResult(bool(body.get("ok")), violations, checked)


@dataclass(frozen=True)
class ChangeRow:
    """One entry of the control plane's change log, its states told in words."""

    at: str
    actor: str
    address: str | None
    kind: str
    target: str
    before: str
    after: str


def changes(items: list[dict[str, Any]]) -> list[ChangeRow]:
    return [
        ChangeRow(
            at=str(item["at"]),
            actor=str(item["actor"]),
            address=item.get("address"),
            kind=str(item["kind"]),
            target=str(item["target"]),
            before=state_in_words(item["kind"], item.get("before")),
            after=state_in_words(item["kind"], item.get("after")),
        )
        for item in items
    ]


def state_in_words(kind: str, state: Mapping[str, Any] | None) -> str:
    """A switch, level or rule state as the change log's from/to columns show it."""
    if kind == "switch":
        manual = None if state is None else state.get("manual")
        return "follows the level" if manual is None else f"{'on' if manual else 'off'} (manual)"
    if state is None:
        return "none"
    if kind == "level":
        return str(state.get("level"))
    if kind == "ratelimit":
        return (
            f"{state.get('route')} · {state.get('rate_per_s')}/s · burst {state.get('burst')} "
            f"· {state.get('scope')}"
        )
    return _text(state)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)
