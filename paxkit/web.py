"""Web processes: a component's routes on a Flask app, and the server's worker hooks.

gunicorn loads `paxkit.web:serve('<component>')` (deploy/gunicorn.conf.py is the one
server configuration); its `post_worker_init` hook calls `start_process_work`, and
`worker_exit` calls `stop_process_work`.
"""

from __future__ import annotations

import logging

from flask import Flask

from paxkit.app import create_base_app
from paxkit.auth import require_service_credential
from paxkit.bootstrap import bootstrap
from paxkit.component import Background, Component
from paxkit.logs import configure_logging

log = logging.getLogger(__name__)

COMPONENT = "paxmart.component"
RUNNING = "paxmart.process_work"


def create_app(component: Component) -> Flask:
    """The component's web app: routes only; it starts nothing."""
    app = create_base_app(component.name, component.settings)
    if component.internal:
        require_service_credential(app, component.settings.service_token)
    app.extensions[COMPONENT] = component
    component.register(app)
    return app


def serve(name: str) -> Flask:
    """The WSGI app of a stack component, for the HTTP server to load (JSON logs)."""
    component = bootstrap(name)
    configure_logging(name, component.settings.log_level)
    return create_app(component)


def component_of(app: Flask) -> Component:
    component: Component = app.extensions[COMPONENT]
    return component


def start_process_work(app: Flask) -> None:
    """Start the work this web process runs beside serving (once per process)."""
    if RUNNING in app.extensions or COMPONENT not in app.extensions:
        return
    running: list[Background] = [work.start() for work in component_of(app).web_process()]
    app.extensions[RUNNING] = running
    log.info("web process work started: %s", [w.name for w in running])


def stop_process_work(app: Flask, timeout_s: float = 5.0) -> None:
    for work in reversed(app.extensions.pop(RUNNING, [])):
        work.stop(timeout_s)
