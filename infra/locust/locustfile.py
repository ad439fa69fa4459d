"""Shoppers for locust: browse, look at a product, check the wallet and coupons, place
orders in every transaction mode with coupons and red packets, follow pending orders.

    make load USERS=50 RATE=10 DURATION=60s HOST=http://127.0.0.1:8000   # headless
    make load-ui HOST=http://127.0.0.1:8000        # web UI on http://127.0.0.1:8089

A mode the API refuses with 400 `unsupported_mode` is dropped for every user of the run.
A 409 is a business rejection (out of stock, coupon already used, ...), a valid outcome,
and counts as a success; a 202 is followed with `GET /api/orders/<id>` until it settles.
Each shopper logs in first (`POST /api/auth/token` with the seeded password) and sends its
token on every user-scoped request, logging in again shortly before it expires; a login
answered 429 (the login's brute-force limit) waits its Retry-After. Only loopback hosts
are accepted.
"""

from __future__ import annotations

import ipaddress
import random
import time
from typing import Any
from urllib.parse import urlsplit

import gevent
from locust import HttpUser, between, events, task
from locust.env import Environment

from infra.users import LOGIN_PATH, RENEW_MARGIN_S, dev_password, retry_after_s

USERS = 1000
SKUS = 100
ALL_MODES = ("2pc", "tcc", "saga", "msg")
# Coupon n of every user: (discount, min spend), as seeded (API.md).
COUPON_TERMS = {1: (500, 1000), 2: (1000, 5000), 3: (3000, 20000)}
FOLLOW_DEADLINE_S = 30.0
FOLLOW_EVERY_S = 0.5
LOGIN_DEADLINE_S = 60.0
ORDER_NAME = "/api/orders [{mode}]"


class Modes:
    """The modes still worth trying in this run, shared by every simulated user."""

    accepted: list[str] = list(ALL_MODES)

    @classmethod
    def pick(cls) -> str | None:
        return random.choice(cls.accepted) if cls.accepted else None

    @classmethod
    def drop(cls, mode: str) -> None:
        if mode in cls.accepted:
            cls.accepted.remove(mode)


def is_loopback(host: str) -> bool:
    name = urlsplit(host).hostname or ""
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@events.init.add_listener
def only_loopback(environment: Environment, **_: Any) -> None:
    """This load test targets a local paxmart only."""
    host = environment.host or ""
    if host and not is_loopback(host):
        raise SystemExit(f"refusing to load {host}: only loopback hosts are allowed")


def sku(n: int) -> str:
    return f"SKU-{n:04d}"


def order_for(user_id: int, coupon: int | None) -> dict[str, Any]:
    """One or two products; with a coupon, a top-up line makes the total reach its minimum."""
    lines = dict.fromkeys(random.sample(range(1, SKUS + 1), random.randint(1, 2)), 1)
    total = sum(n * 100 * qty for n, qty in lines.items())  # SKU-n costs n * 100 cents
    discount = 0
    if coupon is not None:
        discount, minimum = COUPON_TERMS[coupon]
        if total < minimum:
            top_up = random.randint(50, SKUS)
            extra = -(-(minimum - total) // (top_up * 100))
            lines[top_up] = lines.get(top_up, 0) + extra
            total += top_up * 100 * extra
    return {
        "user_id": user_id,
        "items": [{"sku": sku(n), "qty": qty} for n, qty in lines.items()],
        "coupon_id": f"C-{user_id}-{coupon}" if coupon is not None else None,
        "red_packet_cents": random.randint(0, min(100, total - discount)),
    }


class ShopUser(HttpUser):
    """One shopper: a random seeded user who mostly browses and sometimes buys."""

    wait_time = between(0.5, 2.0)

    def on_start(self) -> None:
        self.user_id = random.randint(1, USERS)
        self.coupons: list[int] = []
        self.token_expires_at = 0.0
        self.log_in()

    def log_in(self) -> None:
        """Log this shopper in; the token goes on every later request of its client."""
        body = {"user_id": self.user_id, "password": dev_password(self.user_id)}
        deadline = time.monotonic() + LOGIN_DEADLINE_S
        while time.monotonic() < deadline:
            started = time.monotonic()
            with self.client.post(LOGIN_PATH, json=body, catch_response=True) as response:
                if response.status_code == 200:
                    answer = response.json()
                    self.client.headers["Authorization"] = f"Bearer {answer['access_token']}"
                    self.token_expires_at = started + float(answer["expires_in"])
                    return
                if response.status_code != 429:
                    response.failure(f"login: status {response.status_code}")
                    return
                response.success()  # the brute-force limit: wait as told, then again
            gevent.sleep(retry_after_s(response) or 1.0)

    def signed_in(self) -> None:
        if time.monotonic() > self.token_expires_at - RENEW_MARGIN_S:
            self.log_in()

    @task(5)
    def browse(self) -> None:
        self.client.get("/api/products")

    @task(5)
    def view_product(self) -> None:
        self.client.get(f"/api/products/{sku(random.randint(1, SKUS))}", name="/api/products/[sku]")

    @task(2)
    def check_wallet(self) -> None:
        self.signed_in()
        self.client.get(f"/api/users/{self.user_id}/wallet", name="/api/users/[id]/wallet")

    @task(2)
    def check_coupons(self) -> None:
        self.signed_in()
        with self.client.get(
            f"/api/users/{self.user_id}/coupons",
            name="/api/users/[id]/coupons",
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"status {response.status_code}")
                return
            self.coupons = [
                int(c["coupon_id"].rsplit("-", 1)[1])
                for c in response.json()["items"]
                if c["status"] == "available"
            ]

    @task(1)
    def recommendations(self) -> None:
        self.client.get("/api/recommendations")

    @task(4)
    def place_order(self) -> None:
        mode = Modes.pick()
        if mode is None:
            return
        self.signed_in()
        coupon = random.choice(self.coupons) if self.coupons and random.random() < 0.3 else None
        body = {**order_for(self.user_id, coupon), "mode": mode}
        with self.client.post(
            "/api/orders", json=body, name=ORDER_NAME.format(mode=mode), catch_response=True
        ) as response:
            if response.status_code in (201, 409):
                response.success()
            elif response.status_code == 202:
                response.success()
                self.follow(response.json()["order_id"])
            elif response.status_code == 400 and _code(response) == "unsupported_mode":
                Modes.drop(mode)
                response.success()
            else:
                response.failure(f"status {response.status_code}: {response.text[:200]}")
        if coupon is not None:
            self.coupons.remove(coupon)

    def follow(self, order_id: str) -> None:
        """Poll a pending order until it settles, failing past the deadline."""
        deadline = time.monotonic() + FOLLOW_DEADLINE_S
        while time.monotonic() < deadline:
            gevent.sleep(FOLLOW_EVERY_S)
            response = self.client.get(f"/api/orders/{order_id}", name="/api/orders/[id]")
            if response.status_code == 200 and response.json()["status"] != "pending":
                return
        events.request.fire(
            request_type="FOLLOW",
            name="pending order settles",
            response_time=FOLLOW_DEADLINE_S * 1000,
            response_length=0,
            exception=TimeoutError(f"{order_id} still pending after {FOLLOW_DEADLINE_S:.0f}s"),
            context={},
        )


def _code(response: Any) -> str | None:
    try:
        code = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None
    return str(code)
