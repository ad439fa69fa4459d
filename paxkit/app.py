"""The base of every component's application factory."""

from __future__ import annotations

from typing import Any

import redis
from flask import Flask, jsonify

from paxkit.config import Settings
from paxkit.errors import register_error_handlers
from paxkit.faults import Faults
from paxkit.metrics import install_metrics
from paxkit.tracing import install_tracing


class ServiceApp(Flask):
    def ensure_sync(self, func: Any) -> Any:
        """No view or hook here is async: skip Flask's coroutine check on every call."""
        return func


def create_base_app(component: str, settings: Settings) -> Flask:
    """A Flask app with the contract's error shape, body limit, health, metrics, tracing."""
    app = ServiceApp(component, static_folder=None)  # no component serves files
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["paxmart.settings"] = settings
    register_error_handlers(app)
    install_metrics(app, component)
    install_tracing(app)

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify({"status": "ok", "component": component})

    return app


def make_faults(component: str, settings: Settings) -> Faults:
    """Fault points for a component: live only when PAXMART_FAULTS is on."""
    client = (
        redis.Redis.from_url(settings.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
        if settings.faults_enabled
        else None
    )
    return Faults(component, client)
