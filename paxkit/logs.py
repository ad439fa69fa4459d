"""JSON logs, one object per line, so a component's log can be grepped and parsed."""

from __future__ import annotations

import json
import logging
import sys
import time

from paxkit.tracing import current_trace_id

ACCESS = logging.getLogger("paxmart.access")
_handler: logging.StreamHandler | None = None


class JsonFormatter(logging.Formatter):
    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component
        self._second = -1
        self._stamp = ""

    def timestamp(self, created: float) -> str:
        """ISO 8601 UTC with milliseconds; the date part is formatted once a second."""
        second = int(created)
        if second != self._second:
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._stamp}.{int((created - second) * 1000):03d}Z"

    def access_entry(self, message: str) -> str:
        """The line `format` would write for an INFO record of the access logger."""
        trace_id = current_trace_id()
        trace = f', "trace_id": "{trace_id}"' if trace_id else ""
        return (
            f'{{"ts": "{self.timestamp(time.time())}", "level": "INFO", '
            f'"component": {json.dumps(self.component)}, "logger": "{ACCESS.name}", '
            f'"msg": {json.dumps(message)}{trace}}}'
        )

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.timestamp(record.created),
            "level": record.levelname,
            "component": self.component,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        trace_id = current_trace_id()
        if trace_id:
            entry["trace_id"] = trace_id
        for key in ("gtid", "order_id", "branch"):
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(component: str, level: str = "INFO") -> None:
    """Route the root logger to stderr as JSON; idempotent."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_paxmart", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(component))
    handler._paxmart = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    global _handler
    _handler = handler
    root.setLevel(level)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    logging.getLogger("pika").setLevel(logging.CRITICAL)


def access_line(method: str, path: str, status: int, elapsed_ms: float) -> None:
    """One JSON line per request, the same as `logging` would write, straight to the JSON
    handler's stream: through the logging machinery it costs several times more, on every
    request of every component."""
    handler = _handler
    if handler is None or not ACCESS.isEnabledFor(logging.INFO):
        return
    formatter = handler.formatter
    assert isinstance(formatter, JsonFormatter)
    line = formatter.access_entry(f"{method} {path} {status} {elapsed_ms:.1f}ms") + "\n"
    with handler.lock:  # type: ignore[union-attr]
        handler.stream.write(line)  # stderr is line-buffered: the newline flushes it
