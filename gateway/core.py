"""The gateway's protections, built once per process by the app factory."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import redis
from flask import current_app
from sqlalchemy.exc import SQLAlchemyError

from gateway import metrics
from gateway.breaker import BreakerPolicy, CircuitBreaker
from gateway.cache import CachePolicy, Entry, ReadCache
from gateway.control import ControlPlane, ControlStore
from gateway.idempotency import Idempotency
from gateway.identity import make_signer
from gateway.notices import Notices
from gateway.ratelimit import RateLimiter
from gateway.redisguard import RedisGuard, RedisUnavailable, fast_client
from gateway.switches import SWITCHES, Snapshot, SwitchState
from gateway.upstreams import Upstream, make_clients
from paxkit.config import Settings
from paxkit.db import Database, make_engine
from paxkit.errors import ApiError
from paxkit.http import ServiceClient
from paxkit.tokens import TokenSigner

log = logging.getLogger(__name__)

PRODUCTS = "products"
# Extra time an idempotency claim outlives the longest order call it guards.
CLAIM_MARGIN_S = 10.0
# The gateway database serves the control plane and every keyed order's two writes.
DB_POOL_SIZE = 4


@dataclass(frozen=True)
class GatewayOptions:
    """Tuning of the protections; the environment sets the first two and the cache's
    read-your-writes window (paxkit.config)."""

    redis_timeout_s: float = 0.5
    ratelimit_failure_mode: str = "open"
    namespace: str = "paxmart:gw"
    redis_retry_after_s: float = 1.0
    control_poll_s: float = 0.5
    cache: CachePolicy = field(default_factory=CachePolicy)
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    idempotency_wait_s: float = 10.0
    degraded_retry_after_s: int = 5
    warmup: bool = True
    warmup_deadline_s: float = 60.0

    @classmethod
    def from_settings(cls, settings: Settings) -> GatewayOptions:
        return cls(
            redis_timeout_s=settings.gateway_redis_timeout_s,
            ratelimit_failure_mode=settings.ratelimit_failure_mode,
            cache=CachePolicy(own_reads_s=settings.cache_own_reads_s),
        )


def product_name(sku: str) -> str:
    return f"product:{sku}"


class Gateway:
    """Every mechanism of one gateway process and the stores they share."""

    def __init__(self, settings: Settings, options: GatewayOptions) -> None:
        self.settings = settings
        self.options = options
        ns = options.namespace
        self.redis = RedisGuard(
            fast_client(settings.redis_url, options.redis_timeout_s), options.redis_retry_after_s
        )
        self.db = Database(make_engine(settings.db_urls["gateway"], pool_size=DB_POOL_SIZE))
        self.upstreams = {
            name: Upstream(client, CircuitBreaker(name, self._breaker_policy(name)))
            for name, client in make_clients(settings).items()
        }
        self.notices = Notices(self.redis, options.control_poll_s, settings.mq_namespace)
        self.limiter = RateLimiter(self.redis, ns, options.ratelimit_failure_mode)
        self.cache = ReadCache(self.redis, ns, options.cache, self.notices)
        self.idempotency = Idempotency(
            self.db,
            claim_s=self.order_timeout_s + CLAIM_MARGIN_S,
            wait_s=options.idempotency_wait_s,
        )
        self.control = ControlPlane(ControlStore(self.db), self.notices, f"{ns}:control", _export)
        self.signer: TokenSigner | None = make_signer(
            settings.auth_signing_key, settings.auth_token_ttl_s
        )
        self.stopping = threading.Event()

    @property
    def order_timeout_s(self) -> float:
        """How long an order placement may take end to end, as the order call's timeout."""
        return self.settings.txn_timeout_s + 5.0

    def _breaker_policy(self, upstream: str) -> BreakerPolicy:
        policy = self.options.breaker
        if upstream == "order":  # a placement legitimately takes up to the txn timeout
            return replace(policy, slow_call_s=max(policy.slow_call_s, self.order_timeout_s))
        return policy

    def switch(self, name: str) -> SwitchState:
        return self.control.snapshot.state(name, self.breaker_open)

    def breaker_open(self, upstream: str) -> bool:
        return self.upstreams[upstream].breaker.is_open()

    def breakers(self) -> dict[str, dict[str, object]]:
        return {name: up.breaker.status() for name, up in self.upstreams.items()}

    def warm_up(self) -> bool:
        """Load the catalogue into the cache (数据预热), retrying until inventory answers."""
        delay, deadline = 0.5, self.options.warmup_deadline_s
        waited = 0.0
        while waited <= deadline:
            try:
                reply = self.upstreams["inventory"].get("/products")
                if reply.ok:
                    warmed = self.cache.warm(catalogue_entries(reply.body))
                    log.info("cache warm-up %s", "done" if warmed else "done by another process")
                    return True
            except (ApiError, RedisUnavailable) as err:
                log.info("cache warm-up waits for its dependencies: %s", err)
            if self.stopping.wait(delay):
                return False
            waited += delay
            delay = min(delay * 2, 5.0)
        log.warning("cache warm-up gave up after %.0fs", deadline)
        return False

    def stop(self) -> None:
        self.stopping.set()
        self.notices.stop()
        self.close()

    def close(self) -> None:
        for up in self.upstreams.values():
            up.close()
        self.redis.close()
        self.db.dispose()

    def ready(self) -> list[str]:
        """The dependencies that do not answer."""
        down = [name for name, up in self.upstreams.items() if not _healthy(up.client)]
        if not _answers(lambda: bool(self.redis.client.ping())):
            down.append("redis")
        if not _answers(lambda: self.db.fetch_one("SELECT 1 AS ok") is not None):
            down.append("gateway-db")
        return down


class ProcessState:
    """What every gateway web process keeps of its own: the control state, kept fresh by
    the notices subscription (which also drops this process's cached copies)."""

    name = "gateway-notices"

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def start(self) -> ProcessState:
        self.gateway.control.load()
        self.gateway.notices.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self.gateway.notices.stop()


class WarmUp:
    """Loads the catalogue into the shared cache once, from the gateway's worker process."""

    name = "gateway-warmup"

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._thread = threading.Thread(target=gateway.warm_up, name=self.name, daemon=True)

    def start(self) -> WarmUp:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self.gateway.stopping.set()
        self._thread.join(timeout_s)


def catalogue_entries(body: dict[str, list[dict[str, object]]]) -> dict[str, Entry]:
    """Cache entries for the product list and for each product in it."""
    entries = {PRODUCTS: Entry(200, json.dumps(body).encode())}
    for item in body["items"]:
        entries[product_name(str(item["sku"]))] = Entry(200, json.dumps(item).encode())
    return entries


def current_gateway() -> Gateway:
    gateway: Gateway = current_app.extensions["paxmart.gateway"]
    return gateway


def _export(snapshot: Snapshot) -> None:
    for name in SWITCHES:
        metrics.SWITCH_ON.labels(name).set(1 if snapshot.planned(name) else 0)


def _healthy(client: ServiceClient) -> bool:
    return _answers(lambda: client.get("/healthz", timeout_s=1.0).ok)


def _answers(probe: Callable[[], object]) -> bool:
    try:
        return bool(probe())
    except (ApiError, redis.RedisError, SQLAlchemyError, OSError):
        return False
