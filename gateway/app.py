"""The gateway: the only public entry point, and where the protections live.

Rate limiting (gateway/ratelimit.py), the product read cache (cache.py), degradation
switches and levels (switches.py, control.py), circuit breakers (breaker.py),
idempotency keys (idempotency.py) and the operator's dashboard (ui/) are built per
process here; nothing runs at import.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from flask import Flask, jsonify

from gateway import guards
from gateway.admin import admin
from gateway.core import Gateway, GatewayOptions, ProcessState, WarmUp, current_gateway
from gateway.reference import ApiReference, reference
from gateway.routes import api
from gateway.ui.session import Sessions
from gateway.ui.telemetry import Telemetry
from gateway.ui.views import Dashboard, ui
from gateway.upstreams import UPSTREAMS
from paxkit.background import Loop
from paxkit.component import Background, Component, ComponentSpec
from paxkit.config import Settings, load_settings
from paxkit.retention import OLDER_THAN_HORIZON, OldRows, Retention
from paxkit.web import create_app as web_app


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


# An Idempotency-Key is kept for the retention horizon after its last use; a claim still
# held by a running request is never pruned.
RETENTION_RULES = (
    OldRows(
        "idempotency_keys",
        f"t.updated_at {OLDER_THAN_HORIZON} "
        "AND (t.claimed_until IS NULL OR t.claimed_until < now())",
    ),
)


class GatewayComponent(Component):
    """The gateway's objects: its protections and the stores they share."""

    internal = False  # the public entry

    def __init__(self, settings: Settings, options: GatewayOptions | None = None) -> None:
        super().__init__("gateway", settings)
        self.gateway = Gateway(settings, options or GatewayOptions.from_settings(settings))
        self.retention = Retention(
            "gateway", self.gateway.db, RETENTION_RULES, settings.retention_s
        )
        # The dashboard reads every upstream's /metrics at once, on threads of its own.
        self.metrics_pool = ThreadPoolExecutor(len(UPSTREAMS), thread_name_prefix="ui-metrics")
        self.dashboard = Dashboard(Sessions(settings.admin_token), Telemetry(self.metrics_pool))
        self.reference = ApiReference()

    def register(self, app: Flask) -> None:
        app.extensions["paxmart.gateway"] = self.gateway
        app.extensions["paxmart.gauges"] = [self.retention.probe()]
        app.extensions["paxmart.dashboard"] = self.dashboard
        app.extensions["paxmart.reference"] = self.reference
        app.add_url_rule("/readyz", "readyz", readyz)
        guards.install(app)
        app.register_blueprint(api)
        app.register_blueprint(admin)
        app.register_blueprint(ui)
        app.register_blueprint(reference)

    def web_process(self) -> list[Background]:
        return [ProcessState(self.gateway)]

    def background(self) -> list[Background]:
        retention = Loop(
            "gateway-retention", self.retention.run_once, self.settings.retention_interval_s
        )
        return [retention, WarmUp(self.gateway)] if self.gateway.options.warmup else [retention]

    def close(self) -> None:
        self.metrics_pool.shutdown(wait=False)
        self.gateway.stop()


COMPONENT = ComponentSpec(
    "gateway", GatewayComponent, (Path(__file__).resolve().parent / "migrations",)
)


def create_app(settings: Settings | None = None, options: GatewayOptions | None = None) -> Flask:
    """A gateway web app; its process work starts with `paxkit.web.start_process_work`."""
    return web_app(GatewayComponent(settings or load_settings(), options))
