"""Bounded-rate mixed load on the gateway (loopback only), every request in the history.

Orders of the four modes and of mode paxos (not 3pc: a partition splits it by design,
tests/e2e/test_threepc_split.py), with coupons and red packets, each under an Idempotency-Key:
so the gateway's record tells the checker which order a request placed even when its
answer was lost. Some keys are sent twice in a row (`duplicate`) or three times at once
(`concurrent`). A few reads, and the `order_async` switch flipped now and then through
the gateway's admin API.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from infra.chaos.history import History, Op
from infra.users import TokenBook, log_in_all, widen_login_limit
from infra.util import is_loopback, wait_until

log = logging.getLogger(__name__)

MODES = ("2pc", "tcc", "saga", "msg", "paxos")
# (discount, min spend) of a seeded user's coupons C-<user>-1/2/3.
COUPONS = {1: (500, 1000), 2: (1000, 5000), 3: (3000, 20000)}
MAX_RED_PACKET = 300
CONCURRENT_COPIES = 3
ASYNC_ON_S = 5.0


@dataclass(frozen=True)
class LoadConfig:
    base_url: str
    admin_token: str
    run_id: str
    rate_per_s: float = 4.0
    max_in_flight: int = 12
    timeout_s: float = 20.0
    first_user: int = 1
    last_user: int = 1000
    skus: int = 100
    async_flip_every_s: float = 30.0
    seed: int = 0


@dataclass(frozen=True)
class Request:
    kind: str
    key: str
    body: dict[str, Any]


def order_body(rng: random.Random, user: int, skus: int) -> dict[str, Any]:
    """A valid order of the seeded catalogue: SKU-000n costs n * 100 cents."""
    lines = [(rng.randint(1, skus), rng.randint(1, 3)) for _ in range(rng.randint(1, 2))]
    items = {f"SKU-{n:04d}": (n, qty) for n, qty in lines}
    total = sum(n * 100 * qty for n, qty in items.values())
    body: dict[str, Any] = {
        "user_id": user,
        "items": [{"sku": sku, "qty": qty} for sku, (_, qty) in items.items()],
        "mode": rng.choice(MODES),
    }
    discount = 0
    if rng.random() < 0.3:
        k = rng.randint(1, 3)
        body["coupon_id"] = f"C-{user}-{k}"
        discount, min_spend = COUPONS[k]
        discount = discount if total >= min_spend else 0
    if rng.random() < 0.02:
        body["red_packet_cents"] = min(100001, total - discount)  # beyond the wallet: failed
    elif rng.random() < 0.7:
        body["red_packet_cents"] = rng.randint(1, min(MAX_RED_PACKET, total - discount))
    return body


def outcome(response: requests.Response) -> tuple[str | None, str | None, str | None]:
    """(error code, order id, order status) of an answer, as far as its body tells."""
    try:
        body = response.json()
    except ValueError:
        return "not_json", None, None
    if not isinstance(body, dict):
        return "not_json", None, None
    error: dict[str, Any] = body["error"] if isinstance(body.get("error"), dict) else {}
    order_id = body.get("order_id") or error.get("order_id")
    return error.get("code"), order_id, body.get("status")


class Load:
    """Runs while started and not paused; never more than max_in_flight requests at once."""

    def __init__(self, config: LoadConfig, history: History) -> None:
        if not is_loopback(urlsplit(config.base_url).hostname or ""):
            raise ValueError(f"chaos load targets loopback only, not {config.base_url}")
        self.config = config
        self.history = history
        self.rng = random.Random(config.seed)
        self._stop = threading.Event()
        self._running = threading.Event()
        self._in_flight = 0
        self._count = 0
        # The Idempotency-Key storm: most orders are sent again or several times at once.
        self.storm = False
        self._lock = threading.Lock()
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(config.max_in_flight, thread_name_prefix="chaos-load")
        self._tokens = TokenBook(config.base_url)  # every user's, logged in by start()
        self._threads = [
            threading.Thread(target=self._pace, name="chaos-pacer", daemon=True),
            threading.Thread(target=self._flip_async, name="chaos-async", daemon=True),
        ]

    def start(self) -> None:
        """Log every user of the load in (before any fault), then start sending."""
        widen_login_limit(self.config.base_url, self.config.admin_token)
        log_in_all(self._tokens, range(self.config.first_user, self.config.last_user + 1))
        for thread in self._threads:
            thread.start()

    def resume(self) -> None:
        self._running.set()

    def pause(self, drain_s: float = 60.0) -> bool:
        """Stop sending; True once every request in flight has its outcome."""
        self._running.clear()
        return wait_until(lambda: self._in_flight == 0, drain_s, 0.1)

    def stop(self) -> None:
        self.pause()
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.config.timeout_s)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _pace(self) -> None:
        interval = 1.0 / self.config.rate_per_s
        while not self._stop.wait(interval):
            if self._running.is_set():
                self._submit(self._next())

    def _submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._in_flight >= self.config.max_in_flight:
                return
            self._in_flight += 1

        def run() -> None:
            try:
                job()
            except Exception:
                log.exception("chaos load request failed")
            finally:
                with self._lock:
                    self._in_flight -= 1

        self._pool.submit(run)

    def _next(self) -> Callable[[], None]:
        roll = self.rng.random()
        if roll < 0.12:
            sku = f"SKU-{self.rng.randint(1, self.config.skus):04d}"
            return lambda: self._read(f"/api/products/{sku}")
        self._count += 1
        user = self.rng.randint(self.config.first_user, self.config.last_user)
        duplicate, concurrent = (0.5, 0.9) if self.storm else (0.22, 0.30)
        kind = "duplicate" if roll < duplicate else "concurrent" if roll < concurrent else "order"
        key = f"chaos-{self.config.run_id}-{self._count}"
        request = Request(kind, key, order_body(self.rng, user, self.config.skus))
        if kind == "duplicate":
            return lambda: self._twice(request)
        if kind == "concurrent":
            return lambda: self._concurrently(request)
        return lambda: self._order(request)

    def _twice(self, request: Request) -> None:
        """A client retrying after its answer: the second one must replay the first."""
        self._order(request)
        self._order(request)

    def _concurrently(self, request: Request) -> None:
        copies = [
            threading.Thread(target=self._order, args=(request,), daemon=True)
            for _ in range(CONCURRENT_COPIES)
        ]
        for thread in copies:
            thread.start()
        for thread in copies:
            thread.join(timeout=self.config.timeout_s + 5)

    def _order(self, request: Request) -> None:
        user = int(request.body["user_id"])
        headers = {"Idempotency-Key": request.key, **self._tokens.headers(user)}
        mode = str(request.body["mode"])
        self._call(request.kind, request.key, mode, "POST", "/api/orders", request.body, headers)

    def _read(self, path: str) -> None:
        self._call("read", "", "", "GET", path, None, {})

    def _call(
        self,
        kind: str,
        key: str,
        mode: str,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        headers: dict[str, str],
    ) -> Op:
        scenario, started = self.history.scenario, time.time()
        try:
            response = self._session().request(
                method,
                self.config.base_url + path,
                json=body,
                headers=headers,
                timeout=self.config.timeout_s,
            )
        except requests.RequestException as exc:
            why = "timeout" if isinstance(exc, requests.Timeout) else "connection_error"
            op = Op(key, kind, mode, scenario, started, time.time(), None, why)
        else:
            code, order_id, status = outcome(response)
            op = Op(
                key,
                kind,
                mode,
                scenario,
                started,
                time.time(),
                response.status_code,
                code,
                order_id,
                status,
            )
        self.history.record(op)
        return op

    def _flip_async(self) -> None:
        """order_async on for a few seconds, every so often, while the load runs."""
        admin = {"Authorization": f"Bearer {self.config.admin_token}"}
        path = "/admin/switches/order_async"
        while not self._stop.wait(self.config.async_flip_every_s):
            if not self._running.is_set():
                continue
            self._call("admin", "", "", "PUT", path, {"on": True}, admin)
            self._stop.wait(ASYNC_ON_S)
            self._call("admin", "", "", "DELETE", path, None, admin)
