"""Reading JSON request bodies strictly: 415 when not JSON, 400 when malformed.

Malformed includes what the JSON grammar allows but nothing downstream can take: nesting
deeper than `MAX_DEPTH` (the parser and every later walk over the body recurse), and
strings or field names holding a NUL character or an unpaired UTF-16 surrogate (neither
can be stored in Postgres text nor encoded as UTF-8).
"""

from __future__ import annotations

import json
import re
from typing import Any

from flask import request

from paxkit.errors import ApiError, InvalidInput
from paxkit.validation import validate_gtid

MAX_DEPTH = 32
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def json_body() -> dict[str, Any]:
    """The request's JSON object, or a contract error."""
    mimetype = request.mimetype or ""
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise ApiError(
            "The request body must be JSON (application/json).",
            code="unsupported_media_type",
            status=415,
        )
    raw = request.get_data(cache=True)
    try:
        body = json.loads(raw)
    except RecursionError as err:
        raise _invalid(f"The body nests deeper than {MAX_DEPTH} levels.") from err
    except (ValueError, UnicodeDecodeError) as err:
        raise _invalid(f"The body is not valid JSON: {err}") from err
    if not isinstance(body, dict):
        raise _invalid("The body must be a JSON object.")
    problem = unfit(body) if may_be_unfit(raw) else None
    if problem is not None:
        raise _invalid(problem)
    return body


def may_be_unfit(raw: bytes) -> bool:
    """False when a byte scan proves the parsed body fit, so the walk can be skipped (the
    usual case; the scan costs a quarter of the parse, the walk twice the parse): in plain
    ASCII JSON a NUL or a surrogate can only be written as a \\u escape (and UTF-16 or -32,
    which the parser also detects, holds NUL bytes), and it cannot nest deeper than it
    has brackets."""
    return (
        not raw.isascii()
        or b"\x00" in raw
        or b"\\u" in raw
        or raw.count(b"[") + raw.count(b"{") > MAX_DEPTH
    )


def unfit(body: Any) -> str | None:
    """Why a parsed body can't be taken (too deep, an unstorable string), or None."""
    pending: list[tuple[Any, int]] = [(body, 1)]
    while pending:
        node, depth = pending.pop()
        if isinstance(node, str):
            if UNSTORABLE.search(node):
                return "A string in the body holds a NUL character or an unpaired surrogate."
            continue
        if not isinstance(node, dict | list):
            continue
        if depth > MAX_DEPTH:
            return f"The body nests deeper than {MAX_DEPTH} levels."
        if isinstance(node, dict) and any(UNSTORABLE.search(key) for key in node):
            return "A field name holds a NUL character or an unpaired surrogate."
        children = node.values() if isinstance(node, dict) else node
        pending.extend((child, depth + 1) for child in children)
    return None


def _invalid(message: str) -> InvalidInput:
    return InvalidInput("body", message, code="invalid_json")


def optional_json_body() -> dict[str, Any]:
    """The request's JSON object, or {} when the request has no body at all."""
    return json_body() if request.get_data(cache=True) else {}


def branch_request() -> tuple[str, dict[str, Any]]:
    """(gtid, payload) of a call on a participant's branch: `{"gtid": …, "payload": {…}}`."""
    body = json_body()
    return validate_gtid(body.get("gtid")), branch_payload(body)


def branch_payload(call: dict[str, Any]) -> dict[str, Any]:
    """The `payload` object of one branch call (none is an empty one)."""
    payload = call.get("payload") or {}
    if not isinstance(payload, dict):
        raise InvalidInput("payload", "payload must be an object")
    return payload
