"""A scenario's own stack: its ports (24000+), databases (`paxmart_scn_*`), Redis db and
message namespace, on the project's Postgres cluster and the local Redis and RabbitMQ,
which no scenario stops. What a scenario kills, pauses or cuts off is always a process or
a proxy it started itself."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, TypeVar

import redis
import requests

from infra.chaos.proxy import Proxy
from infra.deps import ensure_rabbitmq, ensure_redis
from infra.launcher import Stack, stack_components
from infra.pgcluster import ensure_cluster
from infra.users import SignedIn, TokenBook
from paxkit.config import Settings, load_settings
from paxkit.db import Database, make_engine
from paxkit.faults import arm, disarm_all
from paxkit.migrate import migrate_all
from paxkit.spacetime.record import Recording

T = TypeVar("T")

ADMIN_TOKEN = "scenario-admin-token"
PORTS = {
    "gateway": 24000,
    "coordinator": 24010,
    "order": 24011,
    "inventory": 24012,
    "coupon": 24013,
    "redpacket": 24014,
}
PROXY_PORT = 24030
SCENARIO_ENV = {
    "PAXMART_DB_PREFIX": "paxmart_scn_",
    "PAXMART_REDIS_URL": "redis://127.0.0.1:6379/8",
    "PAXMART_MQ_NAMESPACE": "paxmart_scn",
    "PAXMART_ADMIN_TOKEN": ADMIN_TOKEN,
    "PAXMART_SERVICE_TOKEN": "scenario-service-token",
    "PAXMART_AUTH_SIGNING_KEY": "scenario-auth-signing-key-0123456789abcdef",
    "PAXMART_FAULTS": "1",
    "PAXMART_TXN_TIMEOUT_S": "5",
    "PAXMART_BRANCH_TIMEOUT_S": "2",
    "PAXMART_HTTP_TIMEOUT_S": "4",
    "PAXMART_RECOVERY_INTERVAL_S": "0.5",
    "PAXMART_RECOVERY_HORIZON_S": "5",
    "PAXMART_LOCK_TIMEOUT_MS": "1500",
    **{f"PAXMART_{name.upper()}_PORT": str(port) for name, port in PORTS.items()},
}
HTTP_TIMEOUT_S = 30.0


class ScenarioFailed(AssertionError):
    """Something a scenario needs did not happen in time."""


def poll(probe: Callable[[], T | None], timeout_s: float, what: str, interval_s: float = 0.05) -> T:
    """Poll `probe` until it returns something truthy; ScenarioFailed at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise ScenarioFailed(f"{what}: not within {timeout_s:.0f}s")
        time.sleep(interval_s)


@dataclass(frozen=True)
class StageSpec:
    """What a scenario's stack looks like: settings on top of SCENARIO_ENV, the participant
    the coordinator reaches only through a proxy, and which components run."""

    env: Mapping[str, str] = field(default_factory=dict)
    partitioned: str | None = None
    components: tuple[str, ...] | None = None
    component_env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


class Stage:
    """The running stack of one scenario, and what the scenario does to it."""

    def __init__(self, spec: StageSpec, folder: Path, recording: Recording) -> None:
        self.spec = spec
        self.folder = folder
        self.recording = recording
        self.env = {**SCENARIO_ENV, **spec.env}
        self.proxy: Proxy | None = None
        self.stack: Stack | None = None
        self.http = requests.Session()
        self._signed_in: SignedIn | None = None
        self._dbs: dict[str, Database] = {}
        self._saved_env: dict[str, str] = {}

    def __enter__(self) -> Stage:
        self._saved_env = dict(os.environ)
        os.environ.update(self.env)
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self) -> None:
        settings = self.settings
        ensure_cluster(settings)
        ensure_redis(settings)
        ensure_rabbitmq(settings)
        migrate_all(settings, reset=True)
        self.redis.flushdb()
        component_env = {name: dict(env) for name, env in self.spec.component_env.items()}
        if self.spec.partitioned is not None:
            target = ("127.0.0.1", PORTS[self.spec.partitioned])
            self.proxy = Proxy(PROXY_PORT, target).start()
            coordinator_env = component_env.setdefault("coordinator", {})
            coordinator_env[f"PAXMART_{self.spec.partitioned.upper()}_URL"] = self.proxy.url
        wanted = self.spec.components
        components = [c for c in stack_components() if wanted is None or c.name in wanted]
        self.stack = Stack(
            self.env,
            self.folder / "logs",
            components,
            workers=1,
            threads=8,
            component_env=component_env,
        )
        self.stack.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.stack is not None:
            self.stack.stop()
        if self.proxy is not None:
            self.proxy.stop()
        for db in self._dbs.values():
            db.dispose()
        os.environ.clear()
        os.environ.update(self._saved_env)

    @property
    def settings(self) -> Settings:
        return load_settings()

    @property
    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.env["PAXMART_REDIS_URL"], socket_timeout=5)

    @property
    def running(self) -> Stack:
        assert self.stack is not None, "the stage is not up"
        return self.stack

    def db(self, name: str) -> Database:
        """A session on a component's database, as an operator (or a DBA) would open one."""
        if name not in self._dbs:
            self._dbs[name] = Database(make_engine(self.settings.db_urls[name], pool_size=4))
        return self._dbs[name]

    def url(self, path: str) -> str:
        return self.running.url("gateway") + path

    @property
    def signed_in(self) -> SignedIn:
        """The stage's users, each logged in on first use (infra/users.py)."""
        if self._signed_in is None:
            self._signed_in = SignedIn(TokenBook(self.url("")))
        return self._signed_in

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        signed = self.signed_in.sign(path, kwargs)
        return self.http.get(self.url(path), timeout=HTTP_TIMEOUT_S, **signed)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        signed = self.signed_in.sign(path, kwargs)
        response = self.http.post(self.url(path), timeout=HTTP_TIMEOUT_S, **signed)
        if path == "/api/orders":
            self.signed_in.note(response, kwargs.get("json"))
        return response

    def admin(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "X-Actor": "scenario"}
        return self.http.request(
            method, self.url(path), headers=headers, timeout=HTTP_TIMEOUT_S, **kwargs
        )

    def arm(self, component: str, point: str, action: str, **kwargs: Any) -> None:
        arm(self.redis, component, point, action, **kwargs)

    def disarm(self) -> None:
        disarm_all(self.redis)

    def transaction(self, gtid: str) -> dict[str, Any]:
        """The coordinator's record of a transaction, with its timeline."""
        reply = self.admin("GET", f"/admin/transactions/{gtid}")
        if reply.status_code != 200:
            raise ScenarioFailed(f"transaction {gtid}: {reply.status_code} {reply.text[:200]}")
        return dict(reply.json())

    def in_background(self, work: Callable[[], T]) -> Background[T]:
        return Background(work)


class Background(Generic[T]):
    """`work` run in a thread; its result (or error) once it ends."""

    def __init__(self, work: Callable[[], T]) -> None:
        self.result: T | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(work,), daemon=True)
        self._thread.start()

    def _run(self, work: Callable[[], T]) -> None:
        try:
            self.result = work()
        except BaseException as err:  # handed to whoever waits for it
            self.error = err
        finally:
            self.done.set()

    def wait(self, timeout_s: float) -> T | None:
        if not self.done.wait(timeout_s):
            raise ScenarioFailed(f"background work still running after {timeout_s:.0f}s")
        if self.error is not None:
            raise self.error
        return self.result
