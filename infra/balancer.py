"""The local load balancer of a scaled stack: HAProxy in front of each component's instances.

With `scale` N > 1 the launcher runs N web processes of every component, each on a port of
its own (`instance_port`), and one HAProxy process whose frontends listen on the
components' public ports, so every client (and every component calling another) keeps its
address. Each backend health-checks its instances on their readiness endpoint and sends
requests only to the ones that answer; a request whose connection to an instance fails is
tried again on another (`retries`, `option redispatch`), but a request an instance already
received is never sent twice (HAProxy only retries connection failures here), because an
order is not idempotent. The balancer opens a new connection to an instance for every
request (`option http-server-close`): an idle connection kept to an instance that was just
killed would otherwise take the next request and answer it 502, where a fresh connection
is refused and the request goes to a live instance.

HAProxy comes from Debian's packages (`make haproxy` installs it when missing, as root).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

HAPROXY = "haproxy"
BALANCER = "haproxy"  # the balancer's process name in the launcher
# Instance i (1..N) of a component whose public port is P listens on P + step * i.
DEFAULT_PORT_STEP = 100
# Health checks: every CHECK_INTER_MS, down after CHECK_FALL misses, up after CHECK_RISE.
CHECK_INTER_MS = 500
CHECK_FALL = 2
CHECK_RISE = 1
# Above the longest request a component serves (the gateway waits up to the transaction
# timeout plus a margin for an order; gunicorn's own worker timeout is 30 s).
SERVER_TIMEOUT_S = 120


class Instance(NamedTuple):
    """One web process behind the balancer: its name and its own port."""

    name: str
    port: int


@dataclass(frozen=True)
class Backend:
    """A component behind the balancer: its public port, its instances, its health check."""

    name: str
    port: int
    instances: tuple[Instance, ...]
    health_path: str


class BalancerError(RuntimeError):
    """HAProxy is missing or refused its configuration."""


def instance_port(public_port: int, index: int, step: int = DEFAULT_PORT_STEP) -> int:
    """The port of instance `index` (1-based) of a component on `public_port`."""
    if index < 1:
        raise ValueError(f"instances are numbered from 1, not {index}")
    return public_port + step * index


def find_haproxy() -> str:
    """The haproxy binary; BalancerError naming how to install it."""
    path = shutil.which(HAPROXY)
    if path is None:
        raise BalancerError(
            "a scaled stack (scale > 1) needs haproxy, which is not on PATH: "
            "run `make haproxy` as root (Debian package `haproxy`) or set scale to 1"
        )
    return path


def haproxy_command(binary: str, config: Path) -> list[str]:
    """HAProxy in the foreground (the launcher supervises it like any other process)."""
    return [binary, "-db", "-f", str(config)]


def check_command(binary: str, config: Path) -> list[str]:
    return [binary, "-c", "-q", "-f", str(config)]


_GLOBAL = """\
global
    maxconn 4096
    log stdout format raw local0 info

defaults
    mode http
    log global
    option httplog
    option dontlog-normal
    timeout connect 2s
    timeout client {server_timeout}s
    timeout server {server_timeout}s
    timeout http-keep-alive 60s
    timeout check 1s
    option http-server-close
    retries 2
    option redispatch
    retry-on conn-failure
"""


def _backend(backend: Backend, host: str) -> list[str]:
    lines = [
        "",
        f"frontend {backend.name}",
        f"    bind {host}:{backend.port}",
        f"    default_backend {backend.name}-instances",
        "",
        f"backend {backend.name}-instances",
        "    balance leastconn",
        f"    option httpchk GET {backend.health_path}",
        "    http-check expect status 200",
        f"    default-server inter {CHECK_INTER_MS}ms fall {CHECK_FALL} rise {CHECK_RISE}",
    ]
    lines += [f"    server {i.name} {host}:{i.port} check" for i in backend.instances]
    return lines


def haproxy_config(backends: Sequence[Backend], host: str = "127.0.0.1") -> str:
    """The whole haproxy.cfg: one frontend on each public port, one backend of instances."""
    lines = [_GLOBAL.format(server_timeout=SERVER_TIMEOUT_S).rstrip("\n")]
    for backend in backends:
        lines += _backend(backend, host)
    return "\n".join(lines) + "\n"
