"""Gateway benchmark: cached product reads against a trivial Flask endpoint, and the
rate limiter's cost.

Starts its own stack (ports 28000+, databases `paxmart_bench_*`, Redis db 14) plus the
trivial app under the same gunicorn settings, then measures requests/s on loopback of
(a) the trivial endpoint, (b) cached `GET /api/products/SKU-0001` through the gateway,
(c) the same with a generous per-client rate-limit rule on that route, in rounds of
(a, b, c, b) back to back: each round's b is the mean of the runs before and after c, so
drift in the machine's speed during a round cancels out. Targets, on the median of the
per-round ratios: b/a >= 0.7 and 1 - c/b < 0.10.

The cost of end users' tokens, twice: (d) the cached read of (b) sent with a user's bearer
token (the gateway verifies it and keys the client by the user) against (b) again, an A/B
pair per round in alternating order; and, with no stack, the time of one token verify
(`jwt.decode` with every check the gateway makes) against the header parse alone, in
interleaved rounds, with the spread over the rounds.
Prints a table, writes bench-results/gateway.json, exits 1 when a target is missed.

    python -m infra.bench.gateway [--rounds 5] [--seconds 8]
    python -m infra.bench.gateway --token-only      # the verify micro-benchmark alone
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis
import requests

from gateway.identity import make_signer
from infra.deps import ensure_all
from infra.launcher import Component, Stack, stack_components
from infra.pgcluster import ensure_cluster
from infra.users import TokenBook, widen_login_limit
from infra.util import setup_logging
from paxkit.config import REPO_ROOT, load_settings
from paxkit.migrate import migrate_all
from paxkit.tokens import bearer_token

log = logging.getLogger(__name__)

TOKEN = "bench-admin-token"
BENCH_ENV = {
    "PAXMART_DB_PREFIX": "paxmart_bench_",
    "PAXMART_REDIS_URL": "redis://127.0.0.1:6379/14",
    "PAXMART_ADMIN_TOKEN": TOKEN,
    "PAXMART_SERVICE_TOKEN": "bench-service-token",
    "PAXMART_AUTH_SIGNING_KEY": "bench-auth-signing-key-0123456789abcdef0123",
    "PAXMART_GATEWAY_PORT": "28000",
    "PAXMART_COORDINATOR_PORT": "28010",
    "PAXMART_ORDER_PORT": "28011",
    "PAXMART_INVENTORY_PORT": "28012",
    "PAXMART_COUPON_PORT": "28013",
    "PAXMART_REDPACKET_PORT": "28014",
    "PAXMART_TRIVIAL_PORT": "28020",
}
TRIVIAL = Component("trivial", "infra.bench.trivial:create_app()", 28020)
WORKERS, THREADS = 2, 16
CONNECTIONS = 32
PRODUCT_PATH = "/api/products/SKU-0001"
GENEROUS_RULE = {
    "route": "/api/products/<sku>",
    "rate_per_s": 1_000_000,
    "burst": 1_000_000,
    "scope": "client",
}
MIN_RATIO, MAX_LIMITER_COST = 0.7, 0.10
RESULTS = REPO_ROOT / "bench-results" / "gateway.json"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


@dataclass(frozen=True)
class Run:
    rps: float
    errors: int
    requests: int


@dataclass(frozen=True)
class Sample:
    """One measured run: throughput, and CPU per request of the server and of Redis."""

    rps: float
    server_cpu_us: float
    redis_cpu_us: float


def group_cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of processes, from /proc (a gone process counts 0)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def redis_cpu_s(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def wrk(url: str, seconds: int, headers: dict[str, str] | None = None) -> Run:
    """Requests/s by wrk; other than 2xx/3xx answers and broken connections are errors
    (a slow answer, past wrk's timeout, is only slow: a loaded machine is not a bug)."""
    extra = [arg for name, value in (headers or {}).items() for arg in ("-H", f"{name}: {value}")]
    out = subprocess.run(
        ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "--timeout", "10s", *extra, url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rate is None:
        raise SystemExit(f"wrk printed no rate:\n{out}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+)", out)
    total = re.search(r"(\d+) requests in", out)
    errors = int(non_2xx.group(1)) if non_2xx else 0
    errors += sum(int(n) for n in socket.groups()) if socket else 0
    return Run(float(rate.group(1)), errors, int(total.group(1)) if total else 0)


def python_load(url: str, seconds: int, headers: dict[str, str] | None = None) -> Run:
    """A threaded keep-alive load generator, for machines without wrk."""
    parts = urlsplit(url)
    stop_at = time.monotonic() + seconds
    counts = [0, 0]
    lock = threading.Lock()

    def worker() -> None:
        conn = http.client.HTTPConnection(parts.netloc, timeout=10)
        ok = bad = 0
        while time.monotonic() < stop_at:
            conn.request("GET", parts.path, headers=headers or {})
            response = conn.getresponse()
            response.read()
            ok, bad = (ok + 1, bad) if response.status < 400 else (ok, bad + 1)
        conn.close()
        with lock:
            counts[0] += ok
            counts[1] += bad

    threads = [threading.Thread(target=worker) for _ in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Run((counts[0] + counts[1]) / seconds, counts[1], counts[0] + counts[1])


def measure(
    url: str,
    seconds: int,
    pids: list[int],
    store: redis.Redis,
    headers: dict[str, str] | None = None,
) -> Sample:
    load = wrk if shutil.which("wrk") else python_load
    load(url, 2, headers)  # warm the connections and the workers
    server, cache = group_cpu_s(pids), redis_cpu_s(store)
    run = load(url, seconds, headers)
    server, cache = group_cpu_s(pids) - server, redis_cpu_s(store) - cache
    if run.errors:
        raise SystemExit(f"{run.errors} failed requests against {url}")
    per_request = 1e6 / max(run.requests, 1)
    return Sample(run.rps, server * per_request, cache * per_request)


def in_force_everywhere(gateway: str, limited: bool) -> None:
    """Until fresh connections (any worker) agree on whether the rule applies."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        seen = [
            "RateLimit-Limit" in requests.get(gateway + PRODUCT_PATH, timeout=5).headers
            for _ in range(8)
        ]
        if all(s == limited for s in seen):
            return
        time.sleep(0.1)
    raise SystemExit("the rate-limit rule did not reach every gateway worker")


def set_rule(gateway: str, on: bool) -> None:
    url = f"{gateway}/admin/ratelimits/bench"
    if on:
        requests.put(url, json=GENEROUS_RULE, headers=ADMIN, timeout=10).raise_for_status()
    else:
        requests.delete(url, headers=ADMIN, timeout=10).raise_for_status()
    in_force_everywhere(gateway, on)


def wait_cached(gateway: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if requests.get(gateway + PRODUCT_PATH, timeout=5).headers.get("X-Cache") == "HIT":
            return
        time.sleep(0.2)
    raise SystemExit("the product never came from the cache")


def run_rounds(stack: Stack, rounds: int, seconds: int) -> dict[str, list[Sample]]:
    gateway, trivial = stack.url("gateway"), stack.url("trivial")
    store = redis.Redis.from_url(os.environ["PAXMART_REDIS_URL"], socket_timeout=5)
    wait_cached(gateway)
    samples: dict[str, list[Sample]] = {
        "trivial": [],
        "cached": [],
        "limited": [],
        "anonymous": [],
        "authenticated": [],
    }
    widen_login_limit(gateway, TOKEN)
    user = {"Authorization": f"Bearer {TokenBook(gateway).token(7)}"}

    def run(name: str, url: str, component: str, headers: dict[str, str] | None = None) -> None:
        pids = stack.process_group(component)
        samples[name].append(measure(url, seconds, pids, store, headers))

    for number in range(1, rounds + 1):
        run("trivial", trivial + "/product", "trivial")
        run("cached", gateway + PRODUCT_PATH, "gateway")
        set_rule(gateway, on=True)
        run("limited", gateway + PRODUCT_PATH, "gateway")
        set_rule(gateway, on=False)
        run("cached", gateway + PRODUCT_PATH, "gateway")
        samples["cached"][-2:] = [_mean_sample(samples["cached"][-2:])]
        pair = [("anonymous", None), ("authenticated", user)]
        for name, headers in pair if number % 2 else reversed(pair):  # A/B, then B/A
            run(name, gateway + PRODUCT_PATH, "gateway", headers)
        log.info("round %d: %s", number, {k: round(v[-1].rps) for k, v in samples.items()})
    return samples


def _mean_sample(pair: list[Sample]) -> Sample:
    """The mean of the two cached runs around a limited run."""
    return Sample(*(statistics.fmean(getattr(s, f.name) for s in pair) for f in fields(Sample)))


def report(samples: dict[str, list[Sample]], seconds: int) -> dict[str, Any]:
    """Medians, and the targets judged on per-round ratios (each round's three runs are
    back to back, so the ratios resist load that drifts between rounds). CPU per request
    is the view that other load on the machine disturbs least."""
    rps = {name: [s.rps for s in runs] for name, runs in samples.items()}
    rounds = list(zip(rps["trivial"], rps["cached"], rps["limited"], strict=True))
    ratio = statistics.median(cached / trivial for trivial, cached, _ in rounds)
    cost = statistics.median(1 - limited / cached for _, cached, limited in rounds)
    token_costs = [
        1 - authed / anonymous
        for anonymous, authed in zip(rps["anonymous"], rps["authenticated"], strict=True)
    ]
    token_cpu_us = [
        authed.server_cpu_us - anonymous.server_cpu_us
        for anonymous, authed in zip(samples["anonymous"], samples["authenticated"], strict=True)
    ]
    return {
        "generator": "wrk" if shutil.which("wrk") else "python",
        "connections": CONNECTIONS,
        "gunicorn": {"workers": WORKERS, "threads": THREADS, "worker_class": "gthread"},
        "seconds_per_run": seconds,
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "rps_median": {k: round(statistics.median(v), 1) for k, v in rps.items()},
        "rps_samples": {k: [round(v, 1) for v in vs] for k, vs in rps.items()},
        "server_cpu_us_per_request": _median_of(samples, "server_cpu_us"),
        "redis_cpu_us_per_request": _median_of(samples, "redis_cpu_us"),
        "cached_vs_trivial": round(ratio, 3),
        "limiter_cost": round(cost, 3),
        "token_check": {
            "throughput_cost_median": round(statistics.median(token_costs), 3),
            "throughput_cost_spread": [round(min(token_costs), 3), round(max(token_costs), 3)],
            "server_cpu_us_per_request_median": round(statistics.median(token_cpu_us), 1),
            "server_cpu_us_per_request_spread": [
                round(min(token_cpu_us), 1),
                round(max(token_cpu_us), 1),
            ],
            "verify": token_verify_cost(),
        },
        "targets": {"cached_vs_trivial_min": MIN_RATIO, "limiter_cost_max": MAX_LIMITER_COST},
        "pass": ratio >= MIN_RATIO and cost < MAX_LIMITER_COST,
    }


VERIFY_ROUNDS, VERIFY_CALLS = 9, 20_000


def token_verify_cost(rounds: int = VERIFY_ROUNDS, calls: int = VERIFY_CALLS) -> dict[str, Any]:
    """CPU microseconds of one token verify (signature, algorithm, issuer, audience, expiry)
    and of the header parse alone (what an anonymous request pays), in interleaved rounds
    whose order alternates; the median and the spread over the rounds."""
    signer = make_signer(BENCH_ENV["PAXMART_AUTH_SIGNING_KEY"], 900)
    assert signer is not None
    header = f"Bearer {signer.issue('7').token}"

    def verify() -> None:
        token = bearer_token(header)
        assert token is not None
        signer.verify(token)

    def parse() -> None:
        bearer_token(header)

    timings: dict[str, list[float]] = {"verify": [], "parse": []}
    for number in range(rounds):
        pair = [("verify", verify), ("parse", parse)]
        for name, call in pair if number % 2 == 0 else reversed(pair):
            started = time.thread_time()  # CPU time: other load on the machine adds none
            for _ in range(calls):
                call()
            timings[name].append((time.thread_time() - started) / calls * 1e6)
    extra = [v - p for v, p in zip(timings["verify"], timings["parse"], strict=True)]
    return {
        "rounds": rounds,
        "calls_per_round": calls,
        "us_per_call_median": {k: round(statistics.median(v), 2) for k, v in timings.items()},
        "us_per_call_spread": {k: [round(min(v), 2), round(max(v), 2)] for k, v in timings.items()},
        "verify_minus_parse_us_median": round(statistics.median(extra), 2),
        "verify_minus_parse_us_spread": [round(min(extra), 2), round(max(extra), 2)],
    }


def _median_of(samples: dict[str, list[Sample]], field: str) -> dict[str, float]:
    return {
        name: round(statistics.median(getattr(s, field) for s in runs), 1)
        for name, runs in samples.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument(
        "--token-only", action="store_true", help="only time token verifies (no stack)"
    )
    args = parser.parse_args(argv)
    setup_logging()
    if args.token_only:
        print(verify_summary(token_verify_cost()))
        return 0
    os.environ.update(BENCH_ENV)
    settings = load_settings()
    ensure_cluster(settings)
    ensure_all(settings)
    migrate_all(settings, reset=True)
    redis.Redis.from_url(settings.redis_url, socket_timeout=2).flushdb()
    logs = settings.state_dir / "bench-logs"
    with Stack(
        BENCH_ENV, logs, (*stack_components(), TRIVIAL), workers=WORKERS, threads=THREADS
    ) as stack:
        result = report(run_rounds(stack, args.rounds, args.seconds), args.seconds)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(summary(result))
    return 0 if result["pass"] else 1


def summary(result: dict[str, Any]) -> str:
    median, ratio, cost = result["rps_median"], result["cached_vs_trivial"], result["limiter_cost"]
    lines = [f"\ngateway benchmark ({result['generator']}, {CONNECTIONS} connections)"]
    cpu = result["server_cpu_us_per_request"]
    lines += [
        f"  {name:<8} {rps:>9.1f} req/s  {cpu[name]:>7.1f} us server CPU/request"
        for name, rps in median.items()
    ]
    token = result["token_check"]
    lines += [
        f"  cached / trivial  {ratio:.3f}  (target >= {MIN_RATIO})",
        f"  limiter cost      {cost:.1%}  (target < {MAX_LIMITER_COST:.0%})",
        f"  token check cost  {token['throughput_cost_median']:.1%} of throughput "
        f"(rounds {token['throughput_cost_spread']}), "
        f"{token['server_cpu_us_per_request_median']:.1f} us server CPU/request",
        verify_summary(token["verify"]),
        f"  written to {RESULTS}",
    ]
    return "\n".join(lines)


def verify_summary(verify: dict[str, Any]) -> str:
    median, spread = verify["us_per_call_median"], verify["us_per_call_spread"]
    return (
        f"  token verify      {median['verify']:.2f} us (rounds {spread['verify']}), header "
        f"parse alone {median['parse']:.2f} us; verify costs "
        f"{verify['verify_minus_parse_us_median']:.2f} us more "
        f"(spread {verify['verify_minus_parse_us_spread']}, {verify['rounds']} rounds "
        f"of {verify['calls_per_round']})"
    )


if __name__ == "__main__":
    sys.exit(main())
