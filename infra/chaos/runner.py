"""One chaos run: own servers and stack up, load and faults round by round, the verdict.

Every round resumes the load, injects its faults at their times, pauses the load once
its time is up and every fault has ended, and then waits (with a deadline) until the
stack is quiescent: nothing pending, unfinished, frozen, prepared or unsent. Whatever is
left at the deadline is the round's `stuck`. After the last round the checker reads every
database, the audit is asked and compared, and the report is written.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2

from infra.chaos import checker, report
from infra.chaos.history import History, RoundResult
from infra.chaos.load import Load, LoadConfig
from infra.chaos.proxy import Proxy
from infra.chaos.scenarios import Injector, Servers
from infra.chaos.schedule import PARTITIONED, Fault, Plan, Round
from infra.chaos.servers import OwnRabbit, OwnRedis, PgClusters, work_dir
from infra.launcher import Stack
from paxkit.config import load_settings, stack_config
from paxkit.migrate import migrate_all

log = logging.getLogger(__name__)

PORT_BASE = 19000
PROXY_PORT = 19020
QUIESCE_S = 300.0
POLL_S = 1.0
STACK_ENV = {
    "PAXMART_DB_PREFIX": "paxmart_chaos_",
    "PAXMART_MQ_NAMESPACE": "paxmart_chaos",
    "PAXMART_FAULTS": "1",
    "PAXMART_TXN_TIMEOUT_S": "8",
    "PAXMART_BRANCH_TIMEOUT_S": "3",
    "PAXMART_HTTP_TIMEOUT_S": "4",
    "PAXMART_RECOVERY_INTERVAL_S": "1",
    "PAXMART_RECOVERY_HORIZON_S": "8",
    "PAXMART_MSG_RESEND_S": "15",
    "PAXMART_LOCK_TIMEOUT_MS": "1500",
    # The load logs its users in before the first fault and never again: tokens outlive
    # the longest run.
    "PAXMART_AUTH_TOKEN_TTL_S": "86400",
}
PORT_OFFSETS = {
    "gateway": 0,
    "coordinator": 10,
    "order": 11,
    "inventory": 12,
    "coupon": 13,
    "redpacket": 14,
}


@dataclass(frozen=True)
class RunConfig:
    plan: Plan
    out_dir: Path
    rate_per_s: float = 4.0
    quiesce_s: float = QUIESCE_S


def stack_env(clusters: PgClusters, redis_url: str, amqp_url: str) -> dict[str, str]:
    """The chaos stack's settings: its own ports, names, servers and credentials."""
    env = {
        **STACK_ENV,
        "PAXMART_REDIS_URL": redis_url,
        "PAXMART_AMQP_URL": amqp_url,
        "PAXMART_ADMIN_TOKEN": secrets.token_urlsafe(24),
        "PAXMART_SERVICE_TOKEN": secrets.token_urlsafe(24),
        "PAXMART_AUTH_SIGNING_KEY": secrets.token_urlsafe(32),
    }
    for name in stack_config().names:
        env[f"PAXMART_{name.upper()}_PORT"] = str(PORT_BASE + PORT_OFFSETS[name])
        env[f"PAXMART_{name.upper()}_DB_URL"] = clusters.url(name)
    # Mode paxos's acceptors share the coordinator's cluster: its outage is theirs too.
    for name in clusters.base.acceptors:
        env[f"PAXMART_{name.upper()}_DB_URL"] = clusters.url(name, "coordinator")
    return env


class Run:
    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.history = History()
        self.folder = work_dir(load_settings().state_dir)
        self.errors: list[checker.Violation] = []
        self.gateway_url = ""

    def execute(self) -> int:
        started = time.time()
        with self._servers() as servers:
            settings = load_settings()
            seed = checker.Seed.of(checker.read_snapshot(settings.db_urls))
            admin = os.environ["PAXMART_ADMIN_TOKEN"]
            self.gateway_url = servers.stack.url("gateway")
            load = Load(self._load_config(servers, admin), self.history)
            load.start()
            try:
                for number, chaos_round in enumerate(self.config.plan.rounds, 1):
                    self._round(number, chaos_round, servers, load)
            finally:
                load.stop()
            self.history.scenario = "final"
            final = self._quiesce(time.time())
            snap = checker.read_snapshot(settings.db_urls)
            verdict = checker.check(seed, snap, self.history.ops)
            answer = checker.audit(servers.stack.url("gateway"), admin)
            extra = self.errors + checker.compared(verdict, answer)
            log_dir = self.folder / "logs"
            result = report.build(
                self.config.plan,
                self.history,
                verdict,
                extra,
                answer,
                final,
                log_dir,
                time.time() - started,
                snap,
            )
        return report.write(result, self.config.out_dir, self.history)

    def _load_config(self, servers: Servers, admin: str) -> LoadConfig:
        return LoadConfig(
            base_url=servers.stack.url("gateway"),
            admin_token=admin,
            run_id=f"{self.config.plan.seed}-{secrets.token_hex(3)}",
            rate_per_s=self.config.rate_per_s,
            seed=self.config.plan.seed,
        )

    @contextlib.contextmanager
    def _servers(self) -> Iterator[Servers]:
        """Every server and process of the run, stopped again whatever happens."""
        shutil.rmtree(self.folder / "rabbitmq", ignore_errors=True)
        shutil.rmtree(self.folder / "logs", ignore_errors=True)
        os.environ.update(STACK_ENV)  # the database prefix and namespace, for what follows
        names = stack_config().names
        clusters = PgClusters(load_settings(), names, self.folder / "pg")
        own_redis = OwnRedis(self.folder / "redis")
        rabbit = OwnRabbit(self.folder / "rabbitmq")
        proxy: Proxy | None = None
        stack: Stack | None = None
        try:
            clusters.start_all()
            own_redis.start()
            rabbit.start()
            env = stack_env(clusters, own_redis.url, rabbit.url)
            os.environ.update(env)
            settings = load_settings()
            migrate_all(settings, reset=True)
            proxy = Proxy(PROXY_PORT, ("127.0.0.1", int(env[_port_key(PARTITIONED)]))).start()
            stack = Stack(
                env,
                self.folder / "logs",
                workers=1,
                threads=16,
                ready_timeout=120,
                component_env={"coordinator": {f"PAXMART_{PARTITIONED.upper()}_URL": proxy.url}},
            )
            stack.start()
            log.info("chaos stack up; gateway %s, logs %s", stack.url("gateway"), self.folder)
            yield Servers(stack, clusters, own_redis, rabbit, proxy)
        finally:
            if stack is not None:
                stack.stop()
            if proxy is not None:
                proxy.stop()
            rabbit.stop()
            own_redis.stop()
            clusters.stop_all()

    def _round(self, number: int, chaos_round: Round, servers: Servers, load: Load) -> None:
        log.info(
            "round %d/%d: %s (%d faults, %.0fs of load)",
            number,
            len(self.config.plan.rounds),
            chaos_round.scenario,
            len(chaos_round.faults),
            chaos_round.load_s,
        )
        self.history.scenario = f"{number}:{chaos_round.scenario}"
        injector = Injector(servers, self.history)
        load.storm = chaos_round.duplicates
        start = time.time()
        load.resume()
        last_end = self._inject(chaos_round, injector, start)
        load.pause()
        load.storm = False
        result = self._quiesce(last_end)
        self.history.rounds.append(
            RoundResult(
                self.history.scenario, start, time.time(), result.quiescence_s, result.stuck
            )
        )

    def _inject(self, chaos_round: Round, injector: Injector, start: float) -> float:
        """Run the round's faults at their times; returns when the last of them ended."""
        events: list[tuple[float, bool, Fault]] = []
        for fault in chaos_round.faults:
            events.append((fault.at_s, True, fault))
            if fault.hold_s:
                events.append((fault.at_s + fault.hold_s, False, fault))
        events.sort(key=lambda e: (e[0], not e[1]))
        last_end = start
        for at_s, begin, fault in events:
            _pause_until(start + at_s)
            try:
                injector.begin(fault) if begin else injector.end(fault)
            except Exception as exc:
                log.exception("fault %s failed", fault.label)
                self.errors.append(
                    checker.Violation("fault_injection_failed", f"{fault.label}: {exc!r}")
                )
            last_end = time.time()
        _pause_until(start + chaos_round.load_s)
        return last_end

    def _quiesce(self, since: float) -> RoundResult:
        """Poll until nothing is left unsettled and the stack's audit answers clean, or the
        deadline."""
        deadline = time.monotonic() + self.config.quiesce_s
        left: dict[str, int] = {"unread": 1}
        while time.monotonic() < deadline:
            left = self._unsettled()
            if not left:
                return RoundResult(self.history.scenario, since, time.time(), time.time() - since)
            time.sleep(POLL_S)
        log.error("not quiescent after %.0fs: %s", self.config.quiesce_s, left)
        return RoundResult(self.history.scenario, since, time.time(), None, left)

    def _unsettled(self) -> dict[str, int]:
        """What keeps the stack from quiescence: left in the databases, else the audit."""
        try:
            left = checker.stuck(checker.read_snapshot(load_settings().db_urls))
        except psycopg2.Error as exc:
            log.info("quiescence probe: %s", str(exc).strip().splitlines()[0])
            return {"database_unreadable": 1}
        if left:
            return left
        answer = checker.audit(self.gateway_url, os.environ["PAXMART_ADMIN_TOKEN"])
        if answer.status == 200 and answer.ok:
            return {}
        log.info("quiescence probe: audit %s %s", answer.status, answer.error[:200])
        return {f"audit_{answer.status or 'unanswered'}": 1}


def _port_key(name: str) -> str:
    return f"PAXMART_{name.upper()}_PORT"


def _pause_until(moment: float) -> None:
    """The schedule's clock: faults and rounds happen at planned times."""
    delay = moment - time.time()
    if delay > 0:
        time.sleep(delay)
