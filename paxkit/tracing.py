"""W3C trace context: one trace id follows an order through every component and message.

The gateway starts a trace (or continues the client's `traceparent`); every component
reads it from the request, every outgoing call and every outbox event carries it on, and
every JSON log line includes it, so `grep <trace id> .state/logs/*.log` shows an order's
whole path.
"""

from __future__ import annotations

import contextvars
import random
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from flask import Flask, Response, g, request

T = TypeVar("T")

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_trace_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("trace_id", default=None)


def current_trace_id() -> str | None:
    return _trace_id.get()


def parse(traceparent: str | None) -> str | None:
    """The trace id of a valid `traceparent`, else None."""
    match = _TRACEPARENT.match((traceparent or "").strip().lower())
    if match is None or match.group(1) == "0" * 32:
        return None
    return match.group(1)


def new_trace_id() -> str:
    """128 random bits; ids need to be unique, not secret, so no system call per request."""
    return f"{random.getrandbits(128):032x}"


def traceparent(trace_id: str | None = None) -> str | None:
    """A `traceparent` for an outgoing call: the current trace, a new span id."""
    trace_id = trace_id or _trace_id.get()
    return f"00-{trace_id}-{random.getrandbits(64):016x}-01" if trace_id else None


def outgoing_headers() -> dict[str, str]:
    header = traceparent()
    return {"traceparent": header} if header else {}


@contextmanager
def trace(trace_id: str | None) -> Iterator[None]:
    """Run a block (a message handler, say) inside a trace; a new one when none is given."""
    token = _trace_id.set(trace_id or new_trace_id())
    try:
        yield
    finally:
        _trace_id.reset(token)


def in_current_context(fn: Callable[..., T]) -> Callable[..., T]:
    """Wrap `fn` so a thread pool runs it inside the caller's trace."""
    context = contextvars.copy_context()

    def run(*args: Any) -> T:
        return context.copy().run(fn, *args)

    return run


def install_tracing(app: Flask) -> None:
    """Continue (or start) the trace of every request and echo it in the response."""

    @app.before_request
    def _enter() -> None:
        header = request.headers.get("traceparent")
        trace_id = (parse(header) if header else None) or new_trace_id()
        g.paxmart_trace_token = _trace_id.set(trace_id)

    @app.after_request
    def _echo(response: Response) -> Response:
        header = traceparent()
        if header:
            response.headers["traceparent"] = header
        return response

    @app.teardown_request
    def _leave(_: BaseException | None) -> None:
        token = g.pop("paxmart_trace_token", None)
        if token is not None:
            _trace_id.reset(token)
