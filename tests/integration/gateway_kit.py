"""Gateway integration tests: a counting fake upstream, apps served on loopback, own Redis.

The gateway under test is the real app (create_app) on a real socket, against real Redis
and its real Postgres database; only the services behind it are one small stand-in
that counts its hits and can be made slow or failing.
"""

from __future__ import annotations

import contextlib
import re
import socket
import socketserver
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import requests
from flask import Flask, jsonify, request
from sqlalchemy import text
from werkzeug.serving import make_server

from gateway.app import create_app
from gateway.clients import issue_api_key
from gateway.core import Gateway, GatewayOptions
from infra.chaos.servers import OwnRedis as ChaosRedis
from paxkit.config import Settings
from paxkit.db import Database
from paxkit.web import start_process_work, stop_process_work
from tests.conftest import TEST_ENV
from tests.helpers import as_user

ADMIN = {"Authorization": f"Bearer {TEST_ENV['PAXMART_ADMIN_TOKEN']}"}


class FakeUpstream:
    """Stands in for every service behind the gateway; counts hits, can be slow or failing."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.delay_s = 0.0
        self.failing = False
        self.stock = {f"SKU-{n:04d}": 1000 for n in range(1, 6)}
        self.order_headers: list[dict[str, str]] = []
        self.url = ""  # set once served
        self._lock = threading.Lock()
        self.app = self._build()

    def count(self, path: str) -> int:
        with self._lock:
            return self.hits[path]

    def product(self, sku: str) -> dict[str, Any]:
        n = int(sku.split("-")[1])
        return {
            "sku": sku,
            "name": f"Product {n}",
            "price_cents": n * 100,
            "stock": self.stock[sku],
        }

    def _build(self) -> Flask:
        app = Flask("fake-upstream")

        @app.before_request
        def behave() -> Any:
            if request.path == "/healthz":
                return None
            with self._lock:
                self.hits[request.path] += 1
                if request.method == "POST" and request.path == "/orders":
                    self.order_headers.append(dict(request.headers))
            if self.delay_s:
                time.sleep(self.delay_s)  # a slow upstream, not a wait for a condition
            if self.failing:
                return jsonify({"error": {"code": "boom", "message": "failing"}}), 500
            return None

        @app.get("/healthz")
        def healthz() -> Any:
            return {"status": "ok"}

        @app.get("/products")
        def products() -> Any:
            return {"items": [self.product(sku) for sku in sorted(self.stock)]}

        @app.get("/products/top")
        def top() -> Any:
            return {"items": [self.product(sku) for sku in sorted(self.stock)][:3]}

        @app.get("/products/<sku>")
        def product(sku: str) -> Any:
            if sku not in self.stock:
                body = {"error": {"code": "product_not_found", "message": "No such product."}}
                return jsonify(body), 404
            return self.product(sku)

        @app.get("/users/<user_id>/wallet")
        def wallet(user_id: str) -> Any:
            return {"user_id": int(user_id), "balance_cents": 100000, "frozen_cents": 0}

        @app.post("/orders")
        def orders() -> Any:
            body = request.get_json()
            with self._lock:
                number = len(self.order_headers)
                for item in body.get("items", []):
                    self.stock[item["sku"]] -= item["qty"]
            order = {"order_id": f"ord-{number}", "status": "confirmed", "user_id": body["user_id"]}
            return jsonify(order), 201, {"Location": f"/api/orders/ord-{number}"}

        return app


@contextlib.contextmanager
def serving(app: Flask) -> Iterator[str]:
    """Serve a WSGI app on a free loopback port (one thread per request)."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)
        server.server_close()


class DroppingUpstream:
    """An upstream that reads each request whole and hangs up without answering: the
    request reached it, and its answer is lost. Keeps the headers of every request."""

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        kit = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                kit.requests.append(read_request_headers(self.rfile))

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> DroppingUpstream:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def read_request_headers(rfile: Any) -> dict[str, str]:
    """Read one HTTP/1.1 request (its body too) and return its headers."""
    headers: dict[str, str] = {}
    rfile.readline()  # the request line
    while (line := rfile.readline().decode().strip()) != "":
        name, _, value = line.partition(":")
        headers[name.strip()] = value.strip()
    rfile.read(int(headers.get("Content-Length", "0")))
    return headers


def isolated_options(**changes: Any) -> GatewayOptions:
    """Options with a namespace of the test's own, so Redis keys never collide."""
    base = GatewayOptions(namespace=f"paxmart:test:{uuid.uuid4().hex[:12]}", warmup=False)
    return replace(base, **changes)


def gateway_settings(settings: Settings, upstream_url: str, **changes: Any) -> Settings:
    """The test settings with every upstream pointing at the fake."""
    urls = {name: upstream_url for name in settings.urls}
    return replace(settings, urls=urls, **changes)


@dataclass
class RunningGateway:
    url: str
    app: Flask

    @property
    def gateway(self) -> Gateway:
        gateway: Gateway = self.app.extensions["paxmart.gateway"]
        return gateway

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.get(self.url + path, timeout=10, **signed_in(path, kwargs))

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.post(self.url + path, timeout=10, **signed_in(path, kwargs))

    def admin(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {**ADMIN, **kwargs.pop("headers", {})}
        return requests.request(method, self.url + path, headers=headers, timeout=10, **kwargs)


USER_IN_PATH = re.compile(r"^/api/users/([0-9]+)/")


def signed_in(path: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """A user-scoped request carries its user's token unless it says otherwise: the user
    of its path, else of its order body, else user 1 (the fake's orders are anyone's)."""
    headers = dict(kwargs.get("headers") or {})
    if not path.startswith(("/api/users/", "/api/orders")) or "Authorization" in headers:
        return kwargs
    in_path = USER_IN_PATH.match(path)
    body = kwargs.get("json")
    in_body = body.get("user_id") if isinstance(body, dict) else None
    user = int(in_path.group(1)) if in_path else in_body if isinstance(in_body, int) else 1
    return {**kwargs, "headers": {**headers, **as_user(user)}}


def issued_key(name: str) -> dict[str, str]:
    """An `X-Api-Key` header with a key issued to `name` under the suite's signing key."""
    return {"X-Api-Key": issue_api_key(name, TEST_ENV["PAXMART_AUTH_SIGNING_KEY"])}


@contextlib.contextmanager
def running_gateway(settings: Settings, options: GatewayOptions) -> Iterator[RunningGateway]:
    app = create_app(settings, options)
    start_process_work(app)
    try:
        with serving(app) as url:
            yield RunningGateway(url, app)
    finally:
        stop_process_work(app)
        app.extensions["paxmart.gateway"].stop()


@contextlib.contextmanager
def two_gateways(
    settings: Settings, options: GatewayOptions | None = None, **settings_changes: Any
) -> Iterator[tuple[RunningGateway, RunningGateway]]:
    """Two gateway instances on one Redis namespace and one control database."""
    options = options or isolated_options()
    settings = replace(settings, **settings_changes)
    with running_gateway(settings, options) as a, running_gateway(settings, options) as b:
        yield a, b


def reset_control(db: Database) -> None:
    """Back to level normal, no manual switches, no rules (and a new version to reload)."""
    with db.transaction() as conn:
        conn.execute(text("DELETE FROM switch_overrides"))
        conn.execute(text("DELETE FROM rate_limit_rules"))
        conn.execute(
            text("UPDATE control_state SET level = 'normal', version = version + 1 WHERE id = 1")
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OwnRedis(ChaosRedis):
    """A redis-server of the test's own on a free port, to stop, pause (SIGSTOP) and resume."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir, free_port())


def timed(call: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = call()
    return result, time.perf_counter() - started
