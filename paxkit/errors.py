"""One error table at the edge: every failure leaves a component in the contract's shape.

`{"error": {"code": "<snake_case>", "message": "<sentence>", ...extra}}` with a proper
status. A dependency that is down or too slow (a database, Redis, the broker), or a fault
point armed to fail, is a 503 with `Retry-After`, whichever route met it; anything else
unexpected is logged and answered as a 500 (which is always a bug).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pika.exceptions
import psycopg2
import redis
from flask import Flask, Response, jsonify
from sqlalchemy import exc as sa_exc
from werkzeug.exceptions import HTTPException

from paxkit.faults import FaultInjected

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error a client is meant to see."""

    status = 400
    code = "bad_request"
    retry_after_s: int | None = None  # when set, answers carry Retry-After unless given one

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
        self.headers = dict(headers or {})
        if self.retry_after_s is not None:
            self.headers.setdefault("Retry-After", str(self.retry_after_s))
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


class AuthRequired(Unauthorized):
    """A user-scoped route called without `Authorization: Bearer <token>`."""

    code = "auth_required"


class TokenInvalid(Unauthorized):
    """A bearer token that is malformed, signed with another key, or not a user's token."""

    code = "token_invalid"


class TokenExpired(Unauthorized):
    """A well-signed token past its expiry: log in again (or refresh before it expires)."""

    code = "token_expired"


class InvalidCredentials(Unauthorized):
    """A login whose user and password do not match (never telling which one was wrong)."""

    code = "invalid_credentials"


class Forbidden(ApiError):
    """Authenticated, but acting on another user's resource."""

    status = 403
    code = "forbidden"


class UpstreamUnavailable(ApiError):
    status = 503
    code = "upstream_unavailable"
    retry_after_s = 1


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


OUTAGE_RETRY_AFTER_S = 1


@dataclass(frozen=True)
class Outage:
    """A kind of dependency failure, answered 503: the request may succeed when retried."""

    errors: tuple[type[BaseException], ...]
    code: str
    message: str


# Connection refused or lost, a pool with no free connection, a statement or lock timeout
# (psycopg2 reports those, deadlocks and serialization failures as OperationalError), and
# the PendingRollbackError a connection lost inside a transaction leaves behind.
OUTAGES = (
    Outage(
        (
            sa_exc.OperationalError,
            sa_exc.InterfaceError,
            sa_exc.DisconnectionError,
            sa_exc.PendingRollbackError,
            sa_exc.TimeoutError,
            psycopg2.OperationalError,
            psycopg2.InterfaceError,
        ),
        "database_unavailable",
        "The database is unavailable or did not answer in time; try again shortly.",
    ),
    Outage(
        (redis.ConnectionError, redis.TimeoutError),
        "redis_unavailable",
        "Redis is unavailable or did not answer in time; try again shortly.",
    ),
    Outage(
        (pika.exceptions.AMQPError,),
        "broker_unavailable",
        "The message broker is unavailable; try again shortly.",
    ),
    # A fault point armed to `fail` (PAXMART_FAULTS) stands for a failure of that step's
    # surroundings, which a retry may get past; it is no bug of the code, so never a 500.
    Outage(
        (FaultInjected,),
        "fault_injected",
        "An injected fault failed this step; try again shortly.",
    ),
)
DATABASE_OUTAGE = OUTAGES[0]


def outage_of(err: BaseException) -> Outage | None:
    """The outage behind an error: the error itself, or what it was raised from."""
    cause: BaseException | None = err
    while cause is not None:
        for outage in OUTAGES:
            if isinstance(cause, outage.errors):
                return outage
        if isinstance(cause, sa_exc.DBAPIError) and cause.connection_invalidated:
            return DATABASE_OUTAGE
        cause = cause.__cause__
    return None


def error_response(status: int, code: str, message: str, **extra: Any) -> Response:
    response = jsonify({"error": {"code": code, "message": message, **extra}})
    response.status_code = status
    return response


def outage_response(outage: Outage) -> Response:
    response = error_response(503, outage.code, outage.message)
    response.headers["Retry-After"] = str(OUTAGE_RETRY_AFTER_S)
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
        outage = outage_of(err)
        if outage is not None:
            log.warning("answered 503 %s: %s", outage.code, _first_line(err))
            return outage_response(outage)
        log.exception("unhandled error: %s", err)
        return error_response(500, "internal_error", "An unexpected error occurred.")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"
