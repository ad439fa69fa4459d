"""Reading JSON request bodies strictly: 415 when not JSON, 400 when malformed."""

from __future__ import annotations

import json
from typing import Any

from flask import request

from paxkit.errors import ApiError, InvalidInput


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
    except (ValueError, UnicodeDecodeError) as err:
        raise InvalidInput(
            "body", f"The body is not valid JSON: {err}", code="invalid_json"
        ) from err
    if not isinstance(body, dict):
        raise InvalidInput("body", "The body must be a JSON object.", code="invalid_json")
    return body


def optional_json_body() -> dict[str, Any]:
    """The request's JSON object, or {} when the request has no body at all."""
    return json_body() if request.get_data(cache=True) else {}
