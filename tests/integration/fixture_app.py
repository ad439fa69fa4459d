"""A tiny WSGI app for launcher tests: it reports that it is alive, which PID serves it and
what its environment holds."""

from __future__ import annotations

import os

from flask import Flask


def create_app() -> Flask:
    app = Flask(__name__)

    @app.get("/healthz")
    def healthz() -> dict[str, object]:
        return {"status": "ok", "pid": os.getpid(), "ppid": os.getppid()}

    @app.get("/env/<name>")
    def env(name: str) -> dict[str, object]:
        return {"value": os.environ.get(name)}

    return app
