"""The raw limit of a web endpoint: Flask reading a JSON body and answering {"ok": true}.

The order benchmark posts the same bodies to `POST /ok` with the same load generator and
the same gunicorn settings as paxmart's components, so `msg` acceptance can be compared
with the cheapest possible POST on this machine.
"""

from __future__ import annotations

from flask import Flask, request


def create_app() -> Flask:
    app = Flask("okapp")

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/ok")
    def ok() -> dict[str, bool]:
        request.get_json(force=True)
        return {"ok": True}

    return app
