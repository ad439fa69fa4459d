"""The whole stack under supervision, on the test ports, reached through the gateway."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pika
import pytest
import redis
import requests

from infra.launcher import Stack
from infra.users import SignedIn, TokenBook
from paxkit.auth import SERVICE_HEADER
from paxkit.config import Settings, load_settings
from paxkit.db import Database
from paxkit.faults import disarm_all
from paxkit.messaging import Topology, connect, delete_topology
from paxkit.migrate import drop_database, migrate_all
from tests.conftest import TEST_ENV, database_handles
from tests.helpers import wait_until

ADMIN = {"Authorization": f"Bearer {TEST_ENV['PAXMART_ADMIN_TOKEN']}"}
# What a call behind the gateway needs: the stack's service credential.
SERVICE = {SERVICE_HEADER: TEST_ENV["PAXMART_SERVICE_TOKEN"]}
FIRST_E2E_USER = 101  # users below this are left to the integration tests


def stack_ports(offset: int) -> dict[str, str]:
    """The suite's component ports moved by `offset`: a stack of a module's own beside it."""
    return {
        name: str(int(port) + offset)
        for name, port in TEST_ENV.items()
        if name.startswith("PAXMART_") and name.endswith("_PORT")
    }


def settings_under(env: dict[str, str]) -> Settings:
    """The settings the stack's components read from `env` (databases, Redis, namespace)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        return load_settings()


def forget(settings: Settings) -> None:
    """Leave nothing of a module's stack behind: its databases, queues and Redis db."""
    for url in settings.db_urls.values():
        drop_database(url)
    delete_topology(settings.amqp_url, Topology.of(settings))
    redis.Redis.from_url(settings.redis_url, socket_timeout=2).flushdb()


@contextmanager
def own_stack(
    env: dict[str, str], log_dir: Path, scale: int = 1
) -> Iterator[tuple[Stack, Settings]]:
    """A stack of a module's own, on `env` (its own ports, databases, Redis db, broker
    namespace), for a module that leaves on purpose what the suite's audit must not see
    (or runs `scale` instances of everything): started on fresh databases, and nothing of
    it left afterwards."""
    settings = settings_under(env)
    migrate_all(settings, reset=True)
    delete_topology(settings.amqp_url, Topology.of(settings))
    redis.Redis.from_url(settings.redis_url, socket_timeout=2).flushdb()
    try:
        with Stack(env, log_dir, workers=1, threads=8, scale=scale) as stack:
            yield stack, settings
    finally:
        forget(settings)


@contextmanager
def own_stack_and_database(
    env: dict[str, str], log_dir: Path, name: str
) -> Iterator[tuple[Stack, Database]]:
    """A stack of a module's own (see `own_stack`) and a handle on one of its databases."""
    with own_stack(env, log_dir) as (stack, settings), database_handles(settings, [name]) as dbs:
        yield stack, dbs[name]


class Api:
    """A client of the public API on the gateway; it logs each user it acts as in (a
    user-scoped request carries the token of the user it names, see infra/users.py)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = requests.Session()
        self.tokens = TokenBook(base_url)
        self.signed_in = SignedIn(self.tokens)

    def as_user(self, user_id: int) -> dict[str, str]:
        """The Authorization header of `user_id` (logged in through POST /api/auth/token)."""
        return self.tokens.headers(user_id)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.http.get(self.base_url + path, timeout=30, **self.signed_in.sign(path, kwargs))

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        signed = self.signed_in.sign(path, kwargs)
        response = self.http.post(self.base_url + path, timeout=30, **signed)
        if path == "/api/orders":
            self.signed_in.note(response, kwargs.get("json"))
        return response

    def order(self, body: dict[str, Any], **kwargs: Any) -> requests.Response:
        return self.post("/api/orders", json=body, **kwargs)

    def wallet(self, user_id: int) -> dict[str, Any]:
        return dict(self.get(f"/api/users/{user_id}/wallet").json())

    def product(self, sku: str) -> dict[str, Any]:
        return dict(self.get(f"/api/products/{sku}").json())

    def coupon_status(self, user_id: int, coupon_id: str) -> str:
        items = self.get(f"/api/users/{user_id}/coupons").json()["items"]
        return str(next(c["status"] for c in items if c["coupon_id"] == coupon_id))

    def settled(
        self, order_id: str, timeout_s: float = 30.0, user: int | None = None
    ) -> dict[str, Any]:
        """The order once it is no longer pending; `user` names its owner when another
        client placed it (this one never saw whose it is)."""
        headers = self.as_user(user) if user is not None else {}

        def probe() -> dict[str, Any] | None:
            body = self.get(f"/api/orders/{order_id}", headers=headers).json()
            return body if body.get("status") in ("confirmed", "failed") else None

        return wait_until(probe, timeout_s, what=f"order {order_id} to settle")

    def audit(self) -> dict[str, Any]:
        response = self.get("/admin/audit", headers=ADMIN)
        assert response.status_code == 200, response.text
        return dict(response.json())


@pytest.fixture(scope="session")
def stack(fresh_databases: Settings, redis_client: redis.Redis) -> Iterator[Stack]:
    with Stack(TEST_ENV, fresh_databases.state_dir / "test-logs", workers=2, threads=8) as running:
        yield running


@pytest.fixture(scope="session")
def api(stack: Stack) -> Api:
    return Api(stack.url("gateway"))


@pytest.fixture(autouse=True)
def no_faults(redis_client: redis.Redis) -> Iterator[None]:
    disarm_all(redis_client)
    yield
    disarm_all(redis_client)


_users = itertools.count(FIRST_E2E_USER)


@pytest.fixture
def user() -> int:
    """A user no other test touches (fresh wallet, unused coupons)."""
    return next(_users)


@pytest.fixture
def another_user() -> int:
    return next(_users)


def publish_raw(settings: Settings, routing_key: str, body: bytes, message_id: str) -> None:
    """Publish a message by hand, as no component would (a poison message, for one)."""
    connection = connect(settings.amqp_url)
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(
            settings.mq_namespace,
            routing_key,
            body,
            pika.BasicProperties(message_id=message_id, delivery_mode=2),
            mandatory=True,
        )
    finally:
        connection.close()


def prepared_for(dbs: dict[str, Database], gtid: str) -> int:
    row = dbs["coordinator"].fetch_one(
        "SELECT count(*) AS n FROM pg_prepared_xacts WHERE gid LIKE :p", p=f"{gtid}:%"
    )
    return int(row["n"]) if row else 0
