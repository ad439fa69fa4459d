"""The gateway: the only public entry point."""

from __future__ import annotations

from typing import Any

import redis
from flask import Flask, current_app, jsonify

from gateway.admin import admin
from gateway.routes import api
from gateway.upstreams import make_upstreams
from paxkit.app import create_base_app
from paxkit.config import Settings, load_settings
from paxkit.errors import ApiError


def readyz() -> Any:
    """200 when every dependency answers, else 503 naming the ones that don't."""
    down = [
        name
        for name, client in current_app.extensions["paxmart.upstreams"].items()
        if not _answers(lambda c=client: c.get("/healthz", timeout_s=1.0).ok)
    ]
    if not _answers(lambda: bool(current_app.extensions["paxmart.redis"].ping())):
        down.append("redis")
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


def _answers(probe: Any) -> bool:
    try:
        return bool(probe())
    except (ApiError, redis.RedisError):
        return False


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or load_settings()
    app = create_base_app("gateway", settings)
    app.extensions["paxmart.upstreams"] = make_upstreams(settings)
    app.extensions["paxmart.redis"] = redis.Redis.from_url(
        settings.redis_url, socket_timeout=0.5, socket_connect_timeout=0.5
    )
    app.add_url_rule("/readyz", "readyz", readyz)
    app.register_blueprint(api)
    app.register_blueprint(admin)
    return app
