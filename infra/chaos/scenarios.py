"""Fault injection: each kind of Fault of the schedule, done to the chaos run's own servers.

Processes of the stack are killed by pid through the launcher's Stack (which restarts
them); the servers through infra/chaos/servers.py; the fault points are armed in the
chaos Redis (paxkit/faults.py); the partition is the runner's proxy.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from infra.chaos.history import History
from infra.chaos.proxy import Proxy
from infra.chaos.schedule import Fault
from infra.chaos.servers import OwnRabbit, OwnRedis, PgClusters
from infra.launcher import WORKER_SUFFIX, Stack
from paxkit.faults import arm

log = logging.getLogger(__name__)

REDIS_TIMEOUT_S = 2.0


@dataclass
class Servers:
    """Everything a fault can reach."""

    stack: Stack
    clusters: PgClusters
    redis: OwnRedis
    rabbit: OwnRabbit
    proxy: Proxy


class Injector:
    """Begins and ends faults, and records each one's window in the history."""

    def __init__(self, servers: Servers, history: History) -> None:
        self.servers = servers
        self.history = history
        self._begun: dict[Fault, float] = {}

    def begin(self, fault: Fault) -> None:
        log.info("fault begins: %s", fault.label)
        self._begun[fault] = time.time()
        self._action(fault, begin=True)()
        if not fault.hold_s:
            self.end(fault)

    def end(self, fault: Fault) -> None:
        if fault.hold_s:
            log.info("fault ends: %s", fault.label)
            self._action(fault, begin=False)()
        self.history.window(fault.label, self._begun.pop(fault, time.time()))

    def _action(self, fault: Fault, begin: bool) -> Callable[[], None]:
        s, t = self.servers, fault.target
        actions: dict[str, tuple[Callable[[], None], Callable[[], None]]] = {
            "kill_web": (lambda: self._kill(t), _nothing),
            "kill_worker": (lambda: self._kill(t + WORKER_SUFFIX), _nothing),
            "pg_restart": (lambda: s.clusters.restart_immediate(t), _nothing),
            "pg_stop": (lambda: s.clusters.stop(t), lambda: s.clusters.start(t)),
            "rabbit_stop": (s.rabbit.stop, self._rabbit_start),
            "rabbit_kill": (s.rabbit.kill, self._rabbit_start),
            "redis_pause": (s.redis.pause, s.redis.resume),
            "redis_restart": (self._redis_restart, _nothing),
            "point": (lambda: self._arm(fault), _nothing),
            "partition": (s.proxy.partition, s.proxy.heal),
        }
        return actions[fault.kind][0 if begin else 1]

    def _kill(self, name: str) -> None:
        """SIGKILL the process (its group, by the pid the Stack started) like a crash; the
        Stack's supervisor restarts it."""
        if self.servers.stack.pid(name) is None:
            log.info("%s is down (coming back); nothing to kill", name)
            return
        self.servers.stack.kill(name)

    def _rabbit_start(self) -> None:
        self.servers.rabbit.start()

    def _redis_restart(self) -> None:
        self.servers.redis.kill()
        self.servers.redis.start()

    def _arm(self, fault: Fault) -> None:
        client = redis.Redis.from_url(self.servers.redis.url, socket_timeout=REDIS_TIMEOUT_S)
        try:
            arm(client, fault.target, fault.point, fault.action, fault.times, fault.seconds)
        finally:
            client.close()


def _nothing() -> None:
    """An instant fault has no end of its own."""
