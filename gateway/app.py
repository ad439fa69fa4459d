"""The gateway: the only public entry point, and where the protections live.

Rate limiting (gateway/ratelimit.py), the product read cache (cache.py), degradation
switches and levels (switches.py, control.py), circuit breakers (breaker.py) and
idempotency keys (idempotency.py) are built per process here; nothing runs at import.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify

from gateway import guards
from gateway.admin import admin
from gateway.core import Gateway, GatewayOptions, current_gateway
from gateway.routes import api
from paxkit.app import create_base_app
from paxkit.config import Settings, load_settings


def readyz() -> Any:
    """200 when every dependency answers, else 503 naming the ones that don't."""
    down = current_gateway().ready()
    if down:
        body = {
            "error": {
                "code": "not_ready",
                "message": f"Not answering: {', '.join(down)}.",
                "down": down,
            }
        }
        return jsonify(body), 503
    return jsonify({"status": "ready"})


def create_app(settings: Settings | None = None, options: GatewayOptions | None = None) -> Flask:
    settings = settings or load_settings()
    options = options or GatewayOptions.from_settings(settings)
    app = create_base_app("gateway", settings)
    gateway = Gateway(settings, options)
    app.extensions["paxmart.gateway"] = gateway
    app.add_url_rule("/readyz", "readyz", readyz)
    guards.install(app)
    app.register_blueprint(api)
    app.register_blueprint(admin)
    gateway.start(background=settings.background_enabled)
    return app
