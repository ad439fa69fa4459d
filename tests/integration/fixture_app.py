"""A tiny WSGI app for launcher tests: it only reports that it is alive and which PID serves it."""

from __future__ import annotations

import os

from flask import Flask


def create_app() -> Flask:
    app = Flask(__name__)

    @app.get("/healthz")
    def healthz() -> dict[str, object]:
        return {"status": "ok", "pid": os.getpid(), "ppid": os.getppid()}

    return app
