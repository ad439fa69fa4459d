"""What gunicorn refuses before any application code runs (a garbage request line, a NUL
in the URI, a URI or headers over its limits) is answered in the contract's JSON shape by
every component of the running stack (deploy/gunicorn.conf.py's worker class), sent over a raw
socket."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

import pytest

from paxkit.config import stack_config

MALFORMED_REQUESTS = {
    "garbage-request-line": (b"garbage\r\n\r\n", 400, "bad_request"),
    "nul-in-the-request-line": (
        b"GET /api/products/\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
        400,
        "bad_request",
    ),
    "bad-http-version": (b"GET / HTTP/9.9\r\nHost: x\r\n\r\n", 400, "bad_request"),
    "bad-header-name": (b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: y\r\n\r\n", 400, "bad_request"),
    "uri-too-long": (
        b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        414,
        "uri_too_long",
    ),
    "too-many-headers": (
        b"GET / HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-%d: y\r\n" % i for i in range(200))
        + b"\r\n",
        431,
        "headers_too_large",
    ),
    "header-too-large": (
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 20_000 + b"\r\n\r\n",
        431,
        "headers_too_large",
    ),
}


def exchange(url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read the answer until the server closes: (status, headers, body)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize("case", MALFORMED_REQUESTS.values(), ids=list(MALFORMED_REQUESTS))
@pytest.mark.parametrize("component", stack_config().names)
def test_the_servers_own_rejections_are_json(stack, component, case):
    request, status, code = case
    got, headers, body = exchange(stack.url(component), request)
    assert got == status, body
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body)
    error = json.loads(body)["error"]
    assert error["code"] == code and isinstance(error["message"], str)
