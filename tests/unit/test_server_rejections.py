"""The HTTP server's own rejections: gunicorn's statuses, the contract's JSON shape.
Pure; tests/e2e/test_server_rejections.py sends malformed requests to the running stack."""

from __future__ import annotations

import json

import pytest
from gunicorn.http import errors as http_errors

from paxkit.server import rejection_for


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (http_errors.InvalidRequestLine("garbage"), 400, "bad_request"),
        (http_errors.InvalidHTTPVersion("HTTP/9.9"), 400, "bad_request"),
        (http_errors.InvalidHeaderName("X\x00"), 400, "bad_request"),
        (http_errors.LimitRequestLine(5000, 4094), 414, "uri_too_long"),
        (http_errors.LimitRequestHeaders("limit request headers fields"), 431, "headers_too_large"),
        (http_errors.UnsupportedTransferCoding("gzip"), 501, "unsupported_transfer_coding"),
        (http_errors.InvalidResponseHeader("X-Bad"), 500, "internal_error"),
        (RuntimeError("a bug"), 500, "internal_error"),
    ],
)
def test_server_rejections_keep_gunicorn_statuses(error, status, code):
    rejection = rejection_for(error)
    assert (rejection.status, rejection.code) == (status, code)
    head, _, body = rejection.response().partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode())
    assert b"Content-Type: application/json" in head
    assert b"Content-Length: %d" % len(body) in head
    assert json.loads(body)["error"]["code"] == code
