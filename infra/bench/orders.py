"""Order throughput and latency of every transaction mode, on a fresh stack per mode.

For each mode: fresh databases and a fresh stack (ports 38000+, `paxmart_bench_orders_*`,
Redis db 13, background loops on, faults off); a short warm-up; orders/s at saturation
(wrk, closed loop); p50/p95/p99 latency at half that rate (open loop, from the scheduled
send time, once the burst has drained and after a warm-up at that rate); the audit,
which must be clean, and the error count, which must be zero. During the saturation run
it samples the whole stack's RSS and accounts the machine's CPU per component, Postgres,
RabbitMQ, Redis and the load generator.

`naive` is the baseline: the same orders through the same services with no protocol at
all (paxkit/naive.py, enabled by BENCH_ENV only), measured like the synchronous modes.

`msg` answers 202 and settles later: its rate is accepted/s during the burst (peak
shaving: the queues fill instead of acceptance starving), settled/s is the orders settled
over the time from the first accept until the last one settled, read from the order
database, and the report adds the backlog of pending orders when the burst ends and the
seconds it took to drain, and the CPU per settled order of every process over that whole
window. A second burst of the same shape then runs with every worker process paused
(SIGSTOP by pid, SIGCONT after): the accept path alone on the cores, as when settlement
has hosts of its own, and the drain that follows. A mode the API refuses with 400
`unsupported_mode` is reported as not available. Writes bench-results/orders.json.

Unless `--no-profile`, a second saturation run of the same shape follows the measured one
(which is never profiled), with py-spy sampling every Python process of the stack
(infra/bench/spy.py); each process's CPU per order in that run is split by layer: server,
framework, database, client, JSON, telemetry, business, other (infra/bench/layers.py
says how a sample is charged). `--profile-overhead N` adds N
interleaved pairs of bursts without and with sampling after it: py-spy's cost as a
throughput ratio.

    python -m infra.bench.orders [--modes naive 2pc tcc saga msg] [--seconds 15]
                                 [--web-workers N --web-threads M]
                                 [--no-profile] [--profile-rate HZ] [--profile-overhead N]
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg2
import redis
import requests

from infra.bench import counts, load
from infra.bench.common import (
    BENCH_ENV,
    CONNECTIONS,
    TOKEN,
    durability,
    prepare_servers,
    write_result,
)
from infra.bench.layers import ms_per_order
from infra.bench.procs import CpuAccount, RssSampler
from infra.bench.spy import RATE_HZ, THREADS, Sampling, Spy, Target
from infra.launcher import WEB_THREADS, WEB_WORKERS, Stack
from infra.util import setup_logging
from paxkit.config import Settings
from paxkit.messaging import Topology, delete_topology
from paxkit.migrate import drop_database, migrate_all

log = logging.getLogger(__name__)

MODES = ("naive", "2pc", "tcc", "saga", "msg")
ASYNC_MODES = ("msg",)
WARMUP_S = 3.0
SETTLE_DEADLINE_S = 300.0
AUDIT_DEADLINE_S = 60.0
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
PROFILER = "profiler (py-spy)"
NOT_PROFILED = "not profiled (--no-profile)"
# A process with fewer on-CPU samples than this keeps its CPU unsplit (too few to share).
MIN_SAMPLES = 20


def available(gateway: str, mode: str, users: load.Users) -> tuple[bool, str]:
    """Place one order in `mode`; (False, why) when the API does not accept the mode."""
    body = {"user_id": 1, "items": [{"sku": "SKU-0001", "qty": 1}], "mode": mode}
    token = {"Authorization": f"Bearer {users.tokens[1]}"}
    reply = requests.post(f"{gateway}/api/orders", json=body, headers=token, timeout=30)
    if reply.status_code == 400:
        error = reply.json().get("error", {})
        return False, f"{error.get('code')}: {error.get('message')}"
    if reply.status_code not in (201, 202):
        raise RuntimeError(f"probe order in {mode} answered {reply.status_code}: {reply.text}")
    return True, ""


class OrderDb:
    """Direct reads of the order database: settlement progress and outcomes."""

    def __init__(self, url: str) -> None:
        self.url = url

    def _one(self, sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...]:
        conn = psycopg2.connect(self.url, connect_timeout=5)
        try:
            with conn, conn.cursor() as cur:
                cur.execute(sql, params)
                row = cur.fetchone()
                assert row is not None
                return tuple(row)
        finally:
            conn.close()

    def now(self) -> datetime:
        value: datetime = self._one("SELECT now()")[0]
        return value

    def pending(self) -> int:
        return int(self._one("SELECT count(*) FROM orders WHERE status = 'pending'")[0])

    def settled_since(self, since: datetime) -> tuple[int, float]:
        """(orders created since `since` and settled, seconds from first created to last
        settled)."""
        count, span = self._one(
            "SELECT count(*), extract(epoch FROM max(updated_at) - min(created_at)) "
            "FROM orders WHERE created_at >= %s AND status <> 'pending'",
            (since,),
        )
        return int(count), float(span or 0.0)

    def created_since(self, since: datetime) -> int:
        return int(self._one("SELECT count(*) FROM orders WHERE created_at >= %s", (since,))[0])

    def outcomes(self) -> dict[str, int]:
        conn = psycopg2.connect(self.url, connect_timeout=5)
        try:
            with conn, conn.cursor() as cur:
                cur.execute(
                    "SELECT status || coalesce(':' || reason, ''), count(*) FROM orders "
                    "GROUP BY 1 ORDER BY 1"
                )
                return {str(k): int(n) for k, n in cur.fetchall()}
        finally:
            conn.close()

    def settle_latency(self, since: datetime) -> dict[str, float]:
        """Percentiles of created -> settled of the orders created since `since`."""
        values = self._one(
            "SELECT percentile_cont(ARRAY[0.5, 0.95, 0.99, 1.0]) WITHIN GROUP "
            "(ORDER BY extract(epoch FROM updated_at - created_at)) "
            "FROM orders WHERE created_at >= %s AND status <> 'pending'",
            (since,),
        )[0] or [0, 0, 0, 0]
        names = ("p50", "p95", "p99", "max")
        return {k: round(float(v) * 1000, 1) for k, v in zip(names, values, strict=True)}

    def wait_settled(self, deadline_s: float) -> float:
        """Poll until no order is pending; the seconds waited (SystemExit past the deadline)."""
        started = time.monotonic()
        while (left := self.pending()) > 0:
            if time.monotonic() - started > deadline_s:
                raise SystemExit(f"{left} orders still pending after {deadline_s:.0f}s")
            time.sleep(0.2)
        return time.monotonic() - started


def audit(gateway: str) -> dict[str, Any]:
    """The gateway's audit, polled until clean or the deadline (in-flight work may settle)."""
    deadline = time.monotonic() + AUDIT_DEADLINE_S
    while True:
        body: dict[str, Any] = requests.get(
            f"{gateway}/admin/audit", headers=ADMIN, timeout=120
        ).json()
        if body.get("ok") or time.monotonic() > deadline:
            return {
                "ok": bool(body.get("ok")),
                "violations": body.get("violations", [])[:20],
                "checked": body.get("checked", {}),
            }
        time.sleep(1.0)


def error_lines(stack: Stack) -> dict[str, int]:
    """ERROR-level JSON log lines per component since the stack started."""
    counts = {}
    for name in stack.names:
        text = stack.log_file(name).read_text(errors="replace")
        counts[name] = text.count('"level": "ERROR"')
    return {k: v for k, v in counts.items() if v}


@dataclass(frozen=True)
class Profile:
    """Whether and how the saturation run is sampled by py-spy, and where its files go."""

    enabled: bool
    rate_hz: int
    out_dir: Path
    overhead_rounds: int = 0
    threads: str = "gil"


def spy_targets(stack: Stack) -> list[Target]:
    """Every process of every web and worker process group, by name."""
    return [Target(name, pid) for name in stack.names for pid in stack.process_group(name)]


def layer_split(
    sampling: Sampling, cpu_s: dict[str, float], orders: int, names: list[str]
) -> dict[str, Any]:
    """The samples' layer shares scaled to each process's measured CPU per order."""
    if not sampling.available:
        return sampling.as_json()
    split = ms_per_order(sampling.samples, cpu_s, orders, names, MIN_SAMPLES)
    return {**sampling.as_json(), "ms_per_order": split.as_json()}


def saturate(
    stack: Stack, mode: str, seconds: float, connections: int, profile: Profile
) -> dict[str, Any]:
    """The closed-loop burst, with the stack's RSS sampled, the CPU accounted and, when
    profiling, every Python process of the stack sampled by py-spy."""
    groups = component_groups(stack)
    members = {n: stack.process_group(n) for n in stack.names}
    targets = spy_targets(stack) if profile.enabled else []
    with (
        RssSampler(lambda: members) as rss,
        Spy(targets, seconds, profile.out_dir / mode, profile.rate_hz, profile.threads) as spy,
    ):
        cpu = CpuAccount(lambda: groups, dict.fromkeys(spy.pids, PROFILER))
        before = counts.snapshot({name: stack.url(name) for name in stack.components})
        cpu.start()
        started = time.monotonic()
        run = load.burst(stack.url("gateway"), seconds, connections, mode)
        usage = cpu.stop(time.monotonic() - started)
        sampling = spy.finish() if profile.enabled else Sampling(False, NOT_PROFILED)
    cpu_s: dict[str, float] = usage["cpu_s"]  # type: ignore[assignment]
    cpu_s["load generator (wrk)"] = round(run.generator_cpu_s, 2)
    done = max(1, run.counts.ok + run.counts.rejected)
    usage["cpu_ms_per_order"] = cpu_ms_per_order(cpu_s, done)
    layers = layer_split(sampling, cpu_s, done, stack.names)
    if profile.enabled and not sampling.available:
        log.warning("%s: no CPU split by layer: %s", mode, sampling.why)
    return {"run": run, "rss": rss.as_json(), "cpu": usage, "before": before, "layers": layers}


def profile_overhead(
    stack: Stack, orders: OrderDb, mode: str, seconds: float, connections: int, profile: Profile
) -> dict[str, Any]:
    """Throughput with py-spy sampling over without, in interleaved bursts (off, on, on,
    off, ...), so drift in the machine's load falls on both sides alike."""
    rates: dict[str, list[float]] = {"off": [], "on": []}
    errors = 0
    for n in range(profile.overhead_rounds):
        for arm in ("off", "on") if n % 2 == 0 else ("on", "off"):
            orders.wait_settled(SETTLE_DEADLINE_S)
            spied = replace(profile, enabled=arm == "on", out_dir=profile.out_dir / "overhead")
            run: load.Run = saturate(stack, mode, seconds, connections, spied)["run"]
            rates[arm].append(round(run.rps, 1))
            errors += run.counts.errors
    orders.wait_settled(SETTLE_DEADLINE_S)
    ratio = sum(rates["on"]) / sum(rates["off"]) if sum(rates["off"]) else None
    return {
        "seconds": seconds,
        "rates_off": rates["off"],
        "rates_on": rates["on"],
        "throughput_ratio_on_over_off": None if ratio is None else round(ratio, 3),
        "errors": errors,
    }


def profiled_saturation(
    stack: Stack, orders: OrderDb, mode: str, seconds: float, connections: int, profile: Profile
) -> dict[str, Any]:
    """A second saturation run of the same shape, sampled by py-spy: the CPU per order by
    layer. Kept apart from the measured run, so the profiler never lowers the headline
    rates; its own rate beside theirs shows what sampling cost (one run, not interleaved)."""
    if not profile.enabled:
        return {"available": False, "why": NOT_PROFILED}
    orders.wait_settled(SETTLE_DEADLINE_S)
    sat = saturate(stack, mode, seconds, connections, profile)
    orders.wait_settled(SETTLE_DEADLINE_S)
    run: load.Run = sat["run"]
    return {
        **sat["layers"],
        "orders_per_s": round(run.rps, 1),
        "errors": run.counts.errors,
        "profiler_cpu_ms_per_order": sat["cpu"]["cpu_ms_per_order"].get(PROFILER, 0.0),
    }


def component_groups(stack: Stack) -> dict[int, str]:
    return {stack.pid(n) or -1: n for n in stack.names}


def cpu_ms_per_order(cpu_s: dict[str, float], orders: int) -> dict[str, float]:
    """CPU seconds per process turned into ms per order."""
    done = max(1, orders)
    return {k: round(v * 1000 / done, 2) for k, v in cpu_s.items()}


def worker_pids(stack: Stack) -> list[int]:
    workers = [name for name in stack.names if name not in stack.components]
    return [pid for name in workers for pid in stack.process_group(name)]


def signal_all(pids: list[int], signum: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            log.warning("worker %d is gone", pid)


def accept_alone(
    stack: Stack, orders: OrderDb, mode: str, seconds: float, connections: int
) -> dict[str, Any]:
    """The burst with every worker process paused (SIGSTOP, by the pids this stack started;
    SIGCONT after): the accept path alone on the cores, as when settlement runs on hosts
    of its own; then the drain, with the cores to itself."""
    orders.wait_settled(SETTLE_DEADLINE_S)
    mark = orders.now()
    paused = worker_pids(stack)
    signal_all(paused, signal.SIGSTOP)
    try:
        run = load.burst(stack.url("gateway"), seconds, connections, mode)
    finally:
        signal_all(paused, signal.SIGCONT)
    backlog = orders.pending()
    drain_s = orders.wait_settled(SETTLE_DEADLINE_S)
    settled, _ = orders.settled_since(mark)
    return {
        "accepted_per_s": round(run.status_rate("202"), 1),
        "backlog_after_burst": backlog,
        "drain_s": round(drain_s, 1),
        "drained_per_s": round(settled / drain_s, 1) if drain_s else 0.0,
        "errors": run.counts.errors,
    }


def bench_mode(
    stack: Stack, orders: OrderDb, mode: str, seconds: float, connections: int, profile: Profile
) -> dict[str, Any]:
    gateway = stack.url("gateway")
    warm = load.burst(gateway, WARMUP_S, connections, mode)
    orders.wait_settled(SETTLE_DEADLINE_S)
    mark = orders.now()
    whole = CpuAccount(lambda: component_groups(stack), {})  # msg: burst and drain
    if mode in ASYNC_MODES:
        whole.start()
    started = time.monotonic()
    sat = saturate(stack, mode, seconds, connections, replace(profile, enabled=False))
    run: load.Run = sat["run"]
    result: dict[str, Any] = {"available": True, "saturation": run.as_json()}
    rate = run.rps
    if mode in ASYNC_MODES:
        result["backlog_after_burst"] = orders.pending()
        result["drain_s"] = round(orders.wait_settled(SETTLE_DEADLINE_S), 1)
        whole_cpu_s: dict[str, float] = whole.stop(time.monotonic() - started)["cpu_s"]  # type: ignore[assignment]
        settled, span = orders.settled_since(mark)
        rate = run.status_rate("202")
        result["accepted_per_s"] = round(rate, 1)
        result["settled_per_s"] = round(settled / span, 1) if span else 0.0
        result["settle_latency_ms"] = orders.settle_latency(mark)
        result["cpu_ms_per_settled_order"] = cpu_ms_per_order(whole_cpu_s, settled)
        result["accept_alone"] = accept_alone(stack, orders, mode, seconds, connections)
    log.info("%s saturation: %.1f/s, errors %d", mode, rate, run.counts.errors)
    # The burst's last requests are still in flight when wrk stops: let them finish, then
    # warm up at the half rate, so the measured tail is the stack's, not the burst's.
    orders.wait_settled(SETTLE_DEADLINE_S)
    after = counts.snapshot({name: stack.url(name) for name in stack.components})
    result["per_order"] = counts.per_order(sat["before"], after, orders.created_since(mark))
    result["layers"] = profiled_saturation(stack, orders, mode, seconds, connections, profile)
    if profile.enabled and profile.overhead_rounds:
        result["profile_overhead"] = profile_overhead(
            stack, orders, mode, seconds, connections, profile
        )
    warm_half = load.paced(gateway, max(1.0, rate / 2), WARMUP_S, mode)
    half = load.paced(gateway, max(1.0, rate / 2), seconds, mode)
    orders.wait_settled(SETTLE_DEADLINE_S)
    latency = half.latency_ms
    result.update(
        orders_per_s=round(rate, 1),
        half_load=half.as_json(),
        latency_ms=latency,
        p99_over_p50=round(latency["p99"] / latency["p50"], 2) if latency["p50"] else None,
        errors=sum(r.counts.errors for r in (warm, run, warm_half, half))
        + result.get("accept_alone", {}).get("errors", 0)
        + result["layers"].get("errors", 0)
        + result.get("profile_overhead", {}).get("errors", 0),
        rejected_409=sum(r.counts.rejected for r in (warm, run, warm_half, half)),
        rss=sat["rss"],
        cpu=sat["cpu"],
        generator_cpu_share=round(run.generator_cpu_share, 4),
        outcomes=orders.outcomes(),
        audit=audit(gateway),
        error_log_lines=error_lines(stack),
    )
    return result


def clean_up(settings: Settings) -> None:
    """Leave nothing behind: the bench databases, its Redis db, its broker namespace."""
    for url in settings.db_urls.values():
        drop_database(url)
    redis.Redis.from_url(settings.redis_url, socket_timeout=2).flushdb()
    delete_topology(settings.amqp_url, Topology.of(settings), exchange=True)


def fresh_state(settings: Settings) -> None:
    migrate_all(settings, reset=True)
    redis.Redis.from_url(settings.redis_url, socket_timeout=2).flushdb()


@dataclass(frozen=True)
class Shape:
    """How many gunicorn workers and threads each web process runs."""

    workers: int
    threads: int


def run_mode(
    settings: Settings,
    mode: str,
    seconds: float,
    connections: int,
    shape: Shape,
    profile: Profile,
) -> dict[str, Any]:
    fresh_state(settings)
    logs = settings.state_dir / "bench-logs" / "orders" / mode
    for old in logs.glob("*.log"):
        old.unlink()
    with Stack(BENCH_ENV, logs, workers=shape.workers, threads=shape.threads) as stack:
        users = load.sign_in(stack.url("gateway"), TOKEN, logs)  # every order authenticated
        ok, why = available(stack.url("gateway"), mode, users)
        if not ok:
            log.warning("mode %s not available: %s", mode, why)
            return {"available": False, "why": why}
        order_db = OrderDb(settings.db_urls["order"])
        return bench_mode(stack, order_db, mode, seconds, connections, profile)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--connections", type=int, default=CONNECTIONS)
    parser.add_argument(
        "--keep", action="store_true", help="keep the databases, Redis db and queues afterwards"
    )
    parser.add_argument("--web-workers", type=int, default=WEB_WORKERS)
    parser.add_argument("--web-threads", type=int, default=WEB_THREADS)
    parser.add_argument(
        "--no-profile", action="store_true", help="no py-spy sampling (no CPU split by layer)"
    )
    parser.add_argument("--profile-rate", type=int, default=RATE_HZ, help="py-spy samples/s")
    parser.add_argument(
        "--profile-threads",
        choices=THREADS,
        default="gil",
        help="sample the GIL holder (cheap) or every running thread (infra/bench/spy.py)",
    )
    parser.add_argument(
        "--profile-overhead",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="after each saturation run, ROUNDS pairs of bursts without and with py-spy",
    )
    args = parser.parse_args(argv)
    shape = Shape(args.web_workers, args.web_threads)
    setup_logging()
    settings, _ = prepare_servers()
    profile = Profile(
        not args.no_profile,
        args.profile_rate,
        settings.state_dir / "bench-logs" / "orders" / "profile",
        args.profile_overhead,
        args.profile_threads,
    )
    results: dict[str, Any] = {
        "connections": args.connections,
        "seconds": args.seconds,
        "web_workers": shape.workers,
        "web_threads": shape.threads,
        "durability": durability(settings),
        "modes": {},
    }
    try:
        for mode in args.modes:
            results["modes"][mode] = run_mode(
                settings, mode, args.seconds, args.connections, shape, profile
            )
            write_result("orders", results)
    finally:
        if not args.keep:
            clean_up(settings)
    write_result("orders", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
