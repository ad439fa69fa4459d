"""One error table at the edge: every failure leaves a component in the contract's shape.

`{"error": {"code": "<snake_case>", "message": "<sentence>", ...extra}}` with a proper
status; anything unexpected is logged and answered as a 500 (which is always a bug).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error a client is meant to see."""

    status = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        code: str | None = None,
        status: int | None = None,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers = headers or {}
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.extra}}


class InvalidInput(ApiError):
    """400 with the offending field named."""

    status = 400
    code = "invalid_field"

    def __init__(self, field: str, message: str, code: str = "invalid_field") -> None:
        super().__init__(message, code=code, field=field)


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class UpstreamUnavailable(ApiError):
    status = 503
    code = "upstream_unavailable"


class UpstreamNotReached(UpstreamUnavailable):
    """The request certainly never reached the upstream (refused or timed out connecting)."""


class UpstreamTimeout(ApiError):
    status = 504
    code = "upstream_timeout"


class OutcomeUnknown(ApiError):
    """A write reached its upstream but its answer was lost: whether it took effect is not
    known, so the client is told where to look instead of being told it failed."""

    status = 504
    code = "outcome_unknown"


_HTTP_CODES = {
    400: ("bad_request", "The request could not be understood."),
    404: ("not_found", "No such resource."),
    405: ("method_not_allowed", "That method is not allowed on this resource."),
    413: ("payload_too_large", "The request body is larger than allowed."),
    415: ("unsupported_media_type", "The request body must be JSON (application/json)."),
}


def error_response(status: int, code: str, message: str, **extra: Any) -> Response:
    response = jsonify({"error": {"code": code, "message": message, **extra}})
    response.status_code = status
    return response


def register_error_handlers(app: Flask) -> None:
    """Map every exception to the contract's error shape."""

    @app.errorhandler(ApiError)
    def _api_error(err: ApiError) -> Response:
        response = jsonify(err.body())
        response.status_code = err.status
        response.headers.update(err.headers)
        return response

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException) -> Response:
        status = err.code or 500
        code, message = _HTTP_CODES.get(status, ("http_error", err.description or "HTTP error"))
        return error_response(status, code, message)

    @app.errorhandler(Exception)
    def _unexpected(err: Exception) -> Response:
        log.exception("unhandled error: %s", err)
        return error_response(500, "internal_error", "An unexpected error occurred.")
