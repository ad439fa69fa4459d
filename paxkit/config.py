"""Settings from environment variables, with defaults that work on a developer machine."""

from __future__ import annotations

import functools
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from paxkit.paxos import DEFAULT_ACCEPTORS

REPO_ROOT = Path(__file__).resolve().parent.parent
STACK_FILE = REPO_ROOT / "deploy" / "stack.toml"

# Protocol bookkeeping (sent outbox rows, inbox, barrier, XA tombstones, branch timelines,
# notification attempts) is pruned once older than the retention horizon. It must exceed
# every window in which a row can still be asked for: message retries and redeliveries
# (minutes), late protocol calls, recovery. An hour is the least that is accepted.
MIN_RETENTION_S = 3600.0
DEFAULT_RETENTION_S = 7 * 24 * 3600.0


@dataclass(frozen=True)
class ComponentEntry:
    """One component of the stack: where its declaration lives and its default port."""

    name: str
    declaration: str  # "module:attribute" of its paxkit.component.ComponentSpec
    default_port: int


@dataclass(frozen=True)
class StackConfig:
    """What the stack is made of (deploy/stack.toml, or PAXMART_STACK_FILE)."""

    components: tuple[ComponentEntry, ...]
    participants: tuple[str, ...]
    initiators: tuple[str, ...]
    # How many instances of each component the launcher runs (docs/scaling.md).
    scale: int = 1

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.components)

    def entry(self, name: str) -> ComponentEntry:
        for component in self.components:
            if component.name == name:
                return component
        raise KeyError(f"no component {name!r} in the stack; known: {', '.join(self.names)}")


@functools.cache
def _read_stack(path: str) -> StackConfig:
    with open(path, "rb") as file:
        raw = tomllib.load(file)
    components = tuple(
        ComponentEntry(name, str(entry["declaration"]), int(entry["port"]))
        for name, entry in raw["components"].items()
    )
    participants = tuple(str(p) for p in raw.get("participants", ()))
    initiators = tuple(str(p) for p in raw.get("initiators", ()))
    unknown = {*participants, *initiators} - {c.name for c in components}
    if unknown:
        raise ValueError(f"{path}: {sorted(unknown)} are not components")
    return StackConfig(components, participants, initiators, int(raw.get("scale", 1)))


def stack_config() -> StackConfig:
    """The stack's components, read once per process (a file read, no other effect)."""
    return _read_stack(_env("PAXMART_STACK_FILE", str(STACK_FILE)))


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


def _env_secret(name: str) -> str | None:
    """A credential from the environment; None when unset or empty (never made up here)."""
    return os.environ.get(name) or None


def _retention_s() -> float:
    horizon = _env_float("PAXMART_RETENTION_S", DEFAULT_RETENTION_S)
    if horizon < MIN_RETENTION_S:
        raise ValueError(
            f"PAXMART_RETENTION_S={horizon:g} is below the least safe horizon of "
            f"{MIN_RETENTION_S:g}s (message retries and late protocol calls need their rows)"
        )
    return horizon


def _env_list(name: str, default: str) -> tuple[str, ...]:
    """A comma-separated list; blanks dropped."""
    return tuple(item.strip() for item in _env(name, default).split(",") if item.strip())


def component_port(name: str) -> int:
    """Port of a component: PAXMART_<NAME>_PORT, else its default."""
    return _env_int(f"PAXMART_{name.upper()}_PORT", stack_config().entry(name).default_port)


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
    # The admin bearer token (gateway /admin/*); None: admin calls are refused.
    admin_token: str | None
    faults_enabled: bool
    http_timeout_s: float
    branch_timeout_s: float
    lock_timeout_ms: int
    recovery_interval_s: float
    recovery_horizon_s: float
    txn_timeout_s: float
    max_body_bytes: int
    log_level: str
    components: tuple[str, ...] = ()
    participants: tuple[str, ...] = ()
    initiators: tuple[str, ...] = ()
    extra: dict[str, str] = field(default_factory=dict)
    # Gateway: what the rate limiter does while Redis is unreachable (gateway/ratelimit.py).
    ratelimit_failure_mode: str = "open"
    # Gateway: socket timeout of every Redis call, so a hung Redis bounds request latency;
    # sized for a busy machine, where a healthy Redis can miss 100 ms.
    gateway_redis_timeout_s: float = 0.5
    # How long a client who ordered reads around the product cache afterwards (its
    # read-your-writes window, gateway/cache.py); 0 turns the window off.
    cache_own_reads_s: float = 5.0
    # Best-effort notification: the retry schedule (seconds) and the hosts it may call.
    notify_schedule_s: tuple[float, ...] = (1, 5, 30, 120, 600)
    notify_allowed_hosts: tuple[str, ...] = ("127.0.0.1", "localhost", "::1")
    # RabbitMQ exchange and queue prefix: one per deployment sharing a broker.
    mq_namespace: str = "paxmart"
    # RabbitMQ queue type, classic or quorum (replicated on a cluster), and a quorum
    # queue's delivery limit: a message delivered that often without an ack is
    # dead-lettered (paxkit/messaging.py, docs/scaling.md).
    amqp_queue_type: str = "classic"
    amqp_delivery_limit: int = 20
    # The credential every internal call carries (paxkit/auth.py); None: internal routes
    # refuse every call and the client sends none.
    service_token: str | None = None
    # The HMAC key the gateway signs end users' bearer tokens with (gateway/identity.py), and
    # how long a token lives; None: user-scoped routes answer 503 credential_not_configured.
    auth_signing_key: str | None = None
    auth_token_ttl_s: float = 900.0
    # How old protocol bookkeeping gets before it is pruned, and how often that runs.
    retention_s: float = DEFAULT_RETENTION_S
    retention_interval_s: float = 60.0
    # msg mode: how long reports may be overdue before the coordinator sends again what is
    # missing (doubling from there). Keep it above the longest backlog expected: a burst
    # waits in the queues legitimately, and copies sent meanwhile only add to the queue.
    msg_resend_s: float = 120.0
    # The components that consume messages, each keeping its own dead letters; the admin
    # component asks each of them for theirs.
    message_consumers: tuple[str, ...] = ()
    # How long an initiator's copy of a catalog price lives before it is fetched again.
    price_ttl_s: float = 300.0
    # The `naive` order mode (paxkit/naive.py): every part applied and committed on its own,
    # no protocol, nothing undone when another part is rejected, so it is UNSAFE and only a
    # benchmark baseline. Off: the mode is refused and no participant serves /naive/apply.
    naive_mode: bool = False
    # The `3pc` order mode (paxkit/threepc.py): three-phase commit, whose participants decide
    # on their own when the coordinator goes quiet, so a partition can commit one branch and
    # abort another. Off: the mode is refused and no participant serves /3pc/*.
    threepc_mode: bool = False
    # 3pc: how long a branch that voted yes waits for its PreCommit before it aborts on its
    # own, and how long a precommitted branch waits for DoCommit or Abort before it commits
    # on its own. Both well above the branch timeout; the second above the transaction
    # lease, so that recovery steps in before a precommitted branch gives up waiting.
    threepc_uncertain_timeout_s: float = 15.0
    threepc_precommit_timeout_s: float = 30.0
    # Mode paxos (coordinator/paxoscommit.py): its Paxos acceptors, each a database of its
    # own (2F+1 of them tolerate F down), and the bound of every call to one of them.
    acceptors: tuple[str, ...] = ()
    acceptor_timeout_s: float = 2.0


def acceptor_names(count: int) -> tuple[str, ...]:
    """The databases of `count` Paxos acceptors: acceptor1, acceptor2, ..."""
    if count < 1:
        raise ValueError(f"PAXMART_PAXOS_ACCEPTORS={count}: mode paxos needs at least one")
    return tuple(f"acceptor{n}" for n in range(1, count + 1))


def load_settings() -> Settings:
    """Read the environment once; app factories call this unless a test passes its own."""
    pg_host = _env("PAXMART_PG_HOST", "127.0.0.1")
    pg_port = _env_int("PAXMART_PG_PORT", 55432)
    pg_user = _env("PAXMART_PG_USER", "postgres")
    prefix = _env("PAXMART_DB_PREFIX", "paxmart_")
    stack = stack_config()
    acceptors = acceptor_names(_env_int("PAXMART_PAXOS_ACCEPTORS", DEFAULT_ACCEPTORS))
    return Settings(
        state_dir=Path(_env("PAXMART_STATE_DIR", str(REPO_ROOT / ".state"))),
        pg_host=pg_host,
        pg_port=pg_port,
        pg_user=pg_user,
        db_prefix=prefix,
        db_urls={
            n: database_url(n, pg_host, pg_port, pg_user, prefix)
            for n in (*stack.names, *acceptors)
        },
        urls={name: component_url(name) for name in stack.names},
        components=stack.names,
        participants=stack.participants,
        initiators=stack.initiators,
        redis_url=_env("PAXMART_REDIS_URL", "redis://127.0.0.1:6379/0"),
        amqp_url=_env("PAXMART_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"),
        admin_token=_env_secret("PAXMART_ADMIN_TOKEN"),
        service_token=_env_secret("PAXMART_SERVICE_TOKEN"),
        auth_signing_key=_env_secret("PAXMART_AUTH_SIGNING_KEY"),
        auth_token_ttl_s=_env_float("PAXMART_AUTH_TOKEN_TTL_S", 900.0),
        retention_s=_retention_s(),
        retention_interval_s=_env_float("PAXMART_RETENTION_INTERVAL_S", 60.0),
        faults_enabled=_env_bool("PAXMART_FAULTS", False),
        http_timeout_s=_env_float("PAXMART_HTTP_TIMEOUT_S", 5.0),
        branch_timeout_s=_env_float("PAXMART_BRANCH_TIMEOUT_S", 3.0),
        lock_timeout_ms=_env_int("PAXMART_LOCK_TIMEOUT_MS", 2000),
        recovery_interval_s=_env_float("PAXMART_RECOVERY_INTERVAL_S", 2.0),
        recovery_horizon_s=_env_float("PAXMART_RECOVERY_HORIZON_S", 10.0),
        txn_timeout_s=_env_float("PAXMART_TXN_TIMEOUT_S", 10.0),
        max_body_bytes=_env_int("PAXMART_MAX_BODY_BYTES", 1024 * 1024),
        log_level=_env("PAXMART_LOG_LEVEL", "INFO"),
        ratelimit_failure_mode=_env("PAXMART_RATELIMIT_FAILURE_MODE", "open"),
        gateway_redis_timeout_s=_env_float("PAXMART_GATEWAY_REDIS_TIMEOUT_S", 0.5),
        cache_own_reads_s=_env_float("PAXMART_CACHE_OWN_READS_S", 5.0),
        mq_namespace=_env("PAXMART_MQ_NAMESPACE", prefix.rstrip("_") or "paxmart"),
        amqp_queue_type=_env("PAXMART_AMQP_QUEUE_TYPE", "classic").strip().lower(),
        amqp_delivery_limit=_env_int("PAXMART_AMQP_DELIVERY_LIMIT", 20),
        notify_schedule_s=tuple(
            float(s) for s in _env("PAXMART_NOTIFY_SCHEDULE_S", "1,5,30,120,600").split(",")
        ),
        notify_allowed_hosts=_env_list("PAXMART_NOTIFY_ALLOWED_HOSTS", "127.0.0.1,localhost,::1"),
        msg_resend_s=_env_float("PAXMART_MSG_RESEND_S", 120.0),
        price_ttl_s=_env_float("PAXMART_PRICE_TTL_S", 300.0),
        naive_mode=_env_bool("PAXMART_NAIVE_MODE", False),
        acceptors=acceptors,
        acceptor_timeout_s=_env_float("PAXMART_ACCEPTOR_TIMEOUT_S", 2.0),
        threepc_mode=_env_bool("PAXMART_3PC_MODE", False),
        threepc_uncertain_timeout_s=_env_float("PAXMART_3PC_UNCERTAIN_TIMEOUT_S", 15.0),
        threepc_precommit_timeout_s=_env_float("PAXMART_3PC_PRECOMMIT_TIMEOUT_S", 30.0),
        message_consumers=_env_list(
            "PAXMART_MESSAGE_CONSUMERS",
            ",".join(("coordinator", *stack.initiators, *stack.participants)),
        ),
    )
