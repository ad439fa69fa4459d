"""Settings from environment variables, with defaults that work on a developer machine."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

SERVICES = ("order", "inventory", "coupon", "redpacket")
PARTICIPANTS = ("inventory", "coupon", "redpacket")
DATABASES = ("coordinator", *SERVICES, "gateway")


@dataclass(frozen=True)
class Component:
    """A process the launcher runs: its WSGI app factory and its default port."""

    name: str
    wsgi: str
    default_port: int


COMPONENTS = (
    Component("inventory", "services.inventory.app:create_app()", 8012),
    Component("coupon", "services.coupon.app:create_app()", 8013),
    Component("redpacket", "services.redpacket.app:create_app()", 8014),
    Component("order", "services.order.app:create_app()", 8011),
    Component("coordinator", "coordinator.app:create_app()", 8010),
    Component("gateway", "gateway.app:create_app()", 8000),
)
COMPONENT_BY_NAME = {c.name: c for c in COMPONENTS}


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, str(default)))


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, str(default)))


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return raw.strip().lower() in ("1", "true", "yes", "on")


def _env_list(name: str, default: str) -> tuple[str, ...]:
    """A comma-separated list; blanks dropped."""
    return tuple(item.strip() for item in _env(name, default).split(",") if item.strip())


def component_port(name: str) -> int:
    """Port of a component: PAXMART_<NAME>_PORT, else its default."""
    return _env_int(f"PAXMART_{name.upper()}_PORT", COMPONENT_BY_NAME[name].default_port)


def component_url(name: str) -> str:
    """Base URL of a component: PAXMART_<NAME>_URL, else loopback on its port."""
    return _env(f"PAXMART_{name.upper()}_URL", f"http://127.0.0.1:{component_port(name)}")


def database_url(name: str, pg_host: str, pg_port: int, pg_user: str, prefix: str) -> str:
    """DSN of one database: PAXMART_<NAME>_DB_URL, else <prefix><name> in the project cluster."""
    default = f"postgresql://{pg_user}@{pg_host}:{pg_port}/{prefix}{name}"
    return _env(f"PAXMART_{name.upper()}_DB_URL", default)


@dataclass(frozen=True)
class Settings:
    """Everything a component needs to know about its surroundings."""

    state_dir: Path
    pg_host: str
    pg_port: int
    pg_user: str
    db_prefix: str
    db_urls: dict[str, str]
    urls: dict[str, str]
    redis_url: str
    amqp_url: str
    admin_token: str
    faults_enabled: bool
    background_enabled: bool
    http_timeout_s: float
    branch_timeout_s: float
    lock_timeout_ms: int
    recovery_interval_s: float
    recovery_horizon_s: float
    txn_timeout_s: float
    max_body_bytes: int
    log_level: str
    extra: dict[str, str] = field(default_factory=dict)
    # Gateway: what the rate limiter does while Redis is unreachable (gateway/ratelimit.py).
    ratelimit_failure_mode: str = "open"
    # Gateway: socket timeout of every Redis call, so a hung Redis bounds request latency.
    gateway_redis_timeout_s: float = 0.1
    # Best-effort notification: the retry schedule (seconds) and the hosts it may call.
    notify_schedule_s: tuple[float, ...] = (1, 5, 30, 120, 600)
    notify_allowed_hosts: tuple[str, ...] = ("127.0.0.1", "localhost", "::1")
    # RabbitMQ exchange and queue prefix: one per deployment sharing a broker.
    mq_namespace: str = "paxmart"
    # msg mode: how long reports may be overdue before the coordinator sends again what is
    # missing (doubling from there). Keep it above the longest backlog expected: a burst
    # waits in the queues legitimately, and copies sent meanwhile only add to the queue.
    msg_resend_s: float = 120.0
    # The components that consume messages, each keeping its own dead letters; the admin
    # component asks each of them for theirs.
    message_consumers: tuple[str, ...] = ("coordinator", "order", *PARTICIPANTS)


def load_settings() -> Settings:
    """Read the environment once; app factories call this unless a test passes its own."""
    pg_host = _env("PAXMART_PG_HOST", "127.0.0.1")
    pg_port = _env_int("PAXMART_PG_PORT", 55432)
    pg_user = _env("PAXMART_PG_USER", "postgres")
    prefix = _env("PAXMART_DB_PREFIX", "paxmart_")
    return Settings(
        state_dir=Path(_env("PAXMART_STATE_DIR", str(REPO_ROOT / ".state"))),
        pg_host=pg_host,
        pg_port=pg_port,
        pg_user=pg_user,
        db_prefix=prefix,
        db_urls={n: database_url(n, pg_host, pg_port, pg_user, prefix) for n in DATABASES},
        urls={c.name: component_url(c.name) for c in COMPONENTS},
        redis_url=_env("PAXMART_REDIS_URL", "redis://127.0.0.1:6379/0"),
        amqp_url=_env("PAXMART_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"),
        admin_token=admin_token(),
        faults_enabled=_env_bool("PAXMART_FAULTS", False),
        background_enabled=_env_bool("PAXMART_BACKGROUND", True),
        http_timeout_s=_env_float("PAXMART_HTTP_TIMEOUT_S", 5.0),
        branch_timeout_s=_env_float("PAXMART_BRANCH_TIMEOUT_S", 3.0),
        lock_timeout_ms=_env_int("PAXMART_LOCK_TIMEOUT_MS", 2000),
        recovery_interval_s=_env_float("PAXMART_RECOVERY_INTERVAL_S", 2.0),
        recovery_horizon_s=_env_float("PAXMART_RECOVERY_HORIZON_S", 10.0),
        txn_timeout_s=_env_float("PAXMART_TXN_TIMEOUT_S", 10.0),
        max_body_bytes=_env_int("PAXMART_MAX_BODY_BYTES", 1024 * 1024),
        log_level=_env("PAXMART_LOG_LEVEL", "INFO"),
        ratelimit_failure_mode=_env("PAXMART_RATELIMIT_FAILURE_MODE", "open"),
        gateway_redis_timeout_s=_env_float("PAXMART_GATEWAY_REDIS_TIMEOUT_S", 0.1),
        mq_namespace=_env("PAXMART_MQ_NAMESPACE", prefix.rstrip("_") or "paxmart"),
        notify_schedule_s=tuple(
            float(s) for s in _env("PAXMART_NOTIFY_SCHEDULE_S", "1,5,30,120,600").split(",")
        ),
        notify_allowed_hosts=_env_list("PAXMART_NOTIFY_ALLOWED_HOSTS", "127.0.0.1,localhost,::1"),
        msg_resend_s=_env_float("PAXMART_MSG_RESEND_S", 120.0),
        message_consumers=_env_list(
            "PAXMART_MESSAGE_CONSUMERS", ",".join(("coordinator", "order", *PARTICIPANTS))
        ),
    )


def admin_token() -> str:
    """The admin bearer token: PAXMART_ADMIN_TOKEN, else a random one (the launcher prints it)."""
    token = os.environ.get("PAXMART_ADMIN_TOKEN")
    if not token:
        token = secrets.token_urlsafe(24)
        os.environ["PAXMART_ADMIN_TOKEN"] = token
    return token
