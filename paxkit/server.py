"""The HTTP server's own rejections in the contract's error shape.

Gunicorn answers a request it cannot parse (a garbage request line, a URI or header
block over its limits, a bad chunked body) itself, before any application code runs,
and writes an HTML page. `ContractWorker` is gunicorn's gthread worker answering those
with `{"error": {"code", "message"}}` JSON and the same statuses instead
(`worker_class` in deploy/gunicorn.conf.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from gunicorn.http import errors as http_errors
from gunicorn.workers.gthread import ThreadWorker


@dataclass(frozen=True)
class Rejection:
    status: int
    code: str
    message: str

    def response(self) -> bytes:
        """A complete HTTP/1.1 response that closes the connection."""
        body = json.dumps({"error": {"code": self.code, "message": self.message}}).encode()
        head = (
            f"HTTP/1.1 {self.status} {HTTPStatus(self.status).phrase}\r\n"
            "Connection: close\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode("ascii") + body


INTERNAL = Rejection(500, "internal_error", "An unexpected error occurred.")
# First match wins: the specific errors before ParseException, the parser's base class.
# A header the application tried to send is the application's fault: a 500 like any other.
REJECTIONS: tuple[tuple[type[BaseException], Rejection], ...] = (
    (http_errors.InvalidResponseHeader, INTERNAL),
    (http_errors.InvalidResponseHeaderName, INTERNAL),
    (http_errors.ConfigurationProblem, INTERNAL),
    (
        http_errors.LimitRequestLine,
        Rejection(414, "uri_too_long", "The request line (method and URI) is too long."),
    ),
    (
        http_errors.LimitRequestHeaders,
        Rejection(431, "headers_too_large", "The request has too many or too large headers."),
    ),
    (
        http_errors.UnsupportedTransferCoding,
        Rejection(501, "unsupported_transfer_coding", "That Transfer-Encoding is not supported."),
    ),
    (
        http_errors.ExpectationFailed,
        Rejection(417, "expectation_failed", "Only 'Expect: 100-continue' is supported."),
    ),
    (
        http_errors.ForbiddenProxyRequest,
        Rejection(403, "forbidden", "Proxy protocol requests are not accepted from here."),
    ),
    (
        http_errors.ParseException,
        Rejection(400, "bad_request", "The request is not well-formed HTTP/1.1."),
    ),
)


def rejection_for(exc: BaseException) -> Rejection:
    for kind, rejection in REJECTIONS:
        if isinstance(exc, kind):
            return rejection
    return INTERNAL


class ContractWorker(ThreadWorker):
    """gthread, with the server's own error answers in the contract's shape."""

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        rejection = rejection_for(exc)
        peer = addr[0] if addr else ""
        if rejection.status >= 500:
            self.log.exception("error handling a request from %s", peer, exc_info=exc)
        else:
            self.log.warning("invalid request from %s: %s", peer, exc)
        try:  # never blocks: the answer fits the empty send buffer of a fresh connection
            client.setblocking(False)
            client.sendall(rejection.response())
        except OSError:
            self.log.debug("the client left before its %d answer", rejection.status)
