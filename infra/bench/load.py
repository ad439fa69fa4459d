"""Load generators of the benchmarks, each measuring its own CPU use.

- `burst`: closed loop at saturation with wrk (C, two threads) and `orders.lua`, which
  posts a fresh small order per request and counts the answers by status (Python threads
  when wrk is not installed).
- `paced`: open loop at a fixed rate from a Python schedule. Latency is measured from
  each request's *scheduled* send time, so a slow answer that delays the next sends is
  counted against the system (no coordinated omission). Used at half the saturation
  rate, where a few dozen threads are cheap.

Orders are placed by authenticated users: `sign_in` logs the seeded users of a gateway in
once (through `POST /api/auth/token`) and every later order load against that gateway
sends each order with its user's token (wrk reads them from a file).
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import random
import resource
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from infra.users import TokenBook, log_in_all, widen_login_limit

LUA_SCRIPT = Path(__file__).with_name("orders.lua")
ORDERS_PATH = "/api/orders"
JSON_HEADERS = {"Content-Type": "application/json"}
BUSINESS_REJECTION = 409
REQUEST_TIMEOUT_S = 30.0
# Below any usual server keep-alive (gunicorn's default is 2 s; infra/launcher.py sets 75 s).
IDLE_RECONNECT_S = 1.5


@dataclass(frozen=True)
class Counts:
    """Answers by kind: 2xx, 409 business rejections, anything else (errors)."""

    ok: int
    rejected: int
    errors: int
    statuses: dict[str, int]

    @classmethod
    def of(cls, statuses: dict[str, int], transport_errors: int) -> Counts:
        ok = sum(n for s, n in statuses.items() if s.startswith("2"))
        rejected = statuses.get(str(BUSINESS_REJECTION), 0)
        errors = sum(statuses.values()) - ok - rejected + transport_errors
        return cls(ok, rejected, errors, dict(sorted(statuses.items())))

    @property
    def total(self) -> int:
        return self.ok + self.rejected + self.errors


@dataclass(frozen=True)
class Run:
    """One load run: its answers, rates, latency and the generator's own CPU."""

    generator: str
    seconds: float
    counts: Counts
    latency_ms: dict[str, float]
    generator_cpu_s: float
    connections: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        """Answered requests per second (2xx and business rejections; errors excluded)."""
        return (self.counts.ok + self.counts.rejected) / self.seconds

    def status_rate(self, prefix: str) -> float:
        return sum(n for s, n in self.counts.statuses.items() if s.startswith(prefix)) / (
            self.seconds
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "generator": self.generator,
            "seconds": round(self.seconds, 2),
            "connections": self.connections,
            "rps": round(self.rps, 1),
            "ok": self.counts.ok,
            "rejected_409": self.counts.rejected,
            "errors": self.counts.errors,
            "statuses": self.counts.statuses,
            "latency_ms": self.latency_ms,
            "generator_cpu_s": round(self.generator_cpu_s, 2),
            "generator_cpu_share": round(self.generator_cpu_share, 4),
            **self.extra,
        }

    @property
    def generator_cpu_share(self) -> float:
        """The generator's CPU as a share of the whole machine (all cores) during the run."""
        return self.generator_cpu_s / (self.seconds * (os.cpu_count() or 1))


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class Users:
    """Logged-in users of one gateway: their tokens, and the file wrk reads them from."""

    tokens: dict[int, str]
    path: Path

    def pick(self, rng: random.Random) -> tuple[int, dict[str, str]]:
        user = rng.choice(list(self.tokens))
        return user, {**JSON_HEADERS, "Authorization": f"Bearer {self.tokens[user]}"}


_SIGNED_IN: dict[str, Users] = {}


def sign_in(base_url: str, admin_token: str, out_dir: Path, count: int = 1000) -> Users:
    """Log users 1..count of the gateway at `base_url` in (its login limit widened for it,
    since they all log in from one address); later loads there send their tokens."""
    widen_login_limit(base_url, admin_token)
    book = TokenBook(base_url)
    log_in_all(book, range(1, count + 1))
    tokens = {user: book.token(user) for user in range(1, count + 1)}
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "users.tokens"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.writelines(f"{user} {token}\n" for user, token in tokens.items())
    users = _SIGNED_IN[base_url] = Users(tokens, path)
    return users


def signed_in(base_url: str) -> Users | None:
    return _SIGNED_IN.get(base_url)


def burst(
    base_url: str,
    seconds: float,
    connections: int,
    mode: str = "2pc",
    path: str = ORDERS_PATH,
    threads: int = 2,
) -> Run:
    """Closed loop: `connections` keep-alive connections posting orders, with wrk when it
    is installed, else from Python threads (which cost the machine far more CPU)."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return python_burst(base_url, seconds, connections, mode, path)
    cmd = [
        wrk,
        *(f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s"),
        *("--timeout", f"{REQUEST_TIMEOUT_S:g}s", "-s", str(LUA_SCRIPT)),
        base_url,
        *("--", path, mode),
        *([str(users.path)] if (users := signed_in(base_url)) else []),
    ]
    cpu_before = _children_cpu_s()
    out = subprocess.run(
        cmd, capture_output=True, text=True, check=True, timeout=seconds + 60
    ).stdout
    cpu = _children_cpu_s() - cpu_before
    line = next((ln for ln in out.splitlines() if ln.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    summary = json.loads(line[len("BENCH ") :])
    return Run(
        generator="wrk",
        seconds=summary["duration_us"] / 1e6,
        counts=Counts.of(summary["statuses"], sum(summary["socket_errors"].values())),
        latency_ms={k: round(v, 2) for k, v in summary["latency_ms"].items()},
        generator_cpu_s=cpu,
        connections=connections,
    )


def order_request(rng: random.Random, mode: str, users: Users | None) -> tuple[str, dict[str, str]]:
    """An order's body and headers: a signed-in user's with its token, else anyone's."""
    user, headers = users.pick(rng) if users else (rng.randint(1, 1000), JSON_HEADERS)
    return json.dumps(order_body(rng, mode, user)), headers


def order_body(rng: random.Random, mode: str, user: int | None = None) -> dict[str, Any]:
    """The same small order as orders.lua: qty 1, a 1..100 cent red packet, no coupon."""
    return {
        "user_id": user if user is not None else rng.randint(1, 1000),
        "items": [{"sku": f"SKU-{rng.randint(1, 100):04d}", "qty": 1}],
        "red_packet_cents": rng.randint(1, 100),
        "mode": mode,
    }


def percentiles(values: list[float]) -> dict[str, float]:
    """p50/p95/p99/max of latencies in seconds, as milliseconds."""
    if not values:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": at(1.0)}


@dataclass
class _Tally:
    """What one paced worker saw; merged after the run."""

    latencies: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    transport_errors: int = 0
    last_done: float = 0.0


class _Connection:
    """A keep-alive connection that reconnects before the server's idle timeout closes it.

    A server drops a connection idle for its keep-alive; posting on it would fail without
    the order ever arriving, so a connection idle for longer than a few seconds is replaced
    first."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port
        self.conn = self._new()
        self.last_used = time.monotonic()

    def _new(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=REQUEST_TIMEOUT_S)

    def post(self, path: str, body: str, headers: dict[str, str] = JSON_HEADERS) -> int:
        if time.monotonic() - self.last_used > IDLE_RECONNECT_S:
            self.reset()
        try:
            self.conn.request("POST", path, body=body, headers=headers)
            response = self.conn.getresponse()
            response.read()
            return response.status
        except BaseException:
            self.reset()
            raise
        finally:
            self.last_used = time.monotonic()

    def reset(self) -> None:
        self.conn.close()
        self.conn = self._new()


def _paced_worker(
    base_url: str, path: str, mode: str, jobs: queue.SimpleQueue[float | None], tally: _Tally
) -> None:
    rng = random.Random()
    conn = _Connection(base_url)
    users = signed_in(base_url)
    while (scheduled := jobs.get()) is not None:
        try:
            status = str(conn.post(path, *order_request(rng, mode, users)))
            tally.statuses[status] = tally.statuses.get(status, 0) + 1
        except (OSError, http.client.HTTPException):
            tally.transport_errors += 1
        tally.last_done = time.monotonic()
        tally.latencies.append(tally.last_done - scheduled)
    conn.conn.close()


def _merge(tallies: list[_Tally]) -> tuple[dict[str, int], int, list[float]]:
    statuses: dict[str, int] = {}
    for tally in tallies:
        for status, n in tally.statuses.items():
            statuses[status] = statuses.get(status, 0) + n
    latencies = [lat for t in tallies for lat in t.latencies]
    return statuses, sum(t.transport_errors for t in tallies), latencies


def _closed_worker(base_url: str, path: str, mode: str, stop_at: float, tally: _Tally) -> None:
    rng = random.Random()
    conn = _Connection(base_url)
    users = signed_in(base_url)
    while (started := time.monotonic()) < stop_at:
        try:
            status = str(conn.post(path, *order_request(rng, mode, users)))
            tally.statuses[status] = tally.statuses.get(status, 0) + 1
        except (OSError, http.client.HTTPException):
            tally.transport_errors += 1
        tally.latencies.append(time.monotonic() - started)
    conn.conn.close()


def python_burst(
    base_url: str, seconds: float, connections: int, mode: str = "2pc", path: str = ORDERS_PATH
) -> Run:
    """The closed loop of `burst` from Python threads, for machines without wrk."""
    tallies = [_Tally() for _ in range(connections)]
    cpu_before = time.process_time()
    start = time.monotonic()
    pool = [
        threading.Thread(
            target=_closed_worker, args=(base_url, path, mode, start + seconds, t), daemon=True
        )
        for t in tallies
    ]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=seconds + REQUEST_TIMEOUT_S + 5)
    elapsed = time.monotonic() - start
    statuses, transport_errors, latencies = _merge(tallies)
    return Run(
        generator="python-closed-loop",
        seconds=elapsed,
        counts=Counts.of(statuses, transport_errors),
        latency_ms=percentiles(latencies),
        generator_cpu_s=time.process_time() - cpu_before,
        connections=connections,
    )


def paced(
    base_url: str,
    rate: float,
    seconds: float,
    mode: str = "2pc",
    path: str = ORDERS_PATH,
    workers: int = 64,
) -> Run:
    """Open loop: one request every 1/rate s, whatever the answers' latency."""
    jobs: queue.SimpleQueue[float | None] = queue.SimpleQueue()
    tallies = [_Tally() for _ in range(workers)]
    pool = [
        threading.Thread(target=_paced_worker, args=(base_url, path, mode, jobs, t), daemon=True)
        for t in tallies
    ]
    cpu_before = time.process_time()
    for thread in pool:
        thread.start()
    start = time.monotonic()
    for i in range(max(1, int(rate * seconds))):
        scheduled = start + i / rate
        time.sleep(max(0.0, scheduled - time.monotonic()))  # the schedule's pacing
        jobs.put(scheduled)
    for _ in pool:
        jobs.put(None)
    for thread in pool:
        thread.join(timeout=REQUEST_TIMEOUT_S + 5)
    cpu = time.process_time() - cpu_before
    statuses, transport_errors, latencies = _merge(tallies)
    elapsed = max([t.last_done for t in tallies] + [start + seconds]) - start
    return Run(
        generator="python-open-loop",
        seconds=elapsed,
        counts=Counts.of(statuses, transport_errors),
        latency_ms=percentiles(latencies),
        generator_cpu_s=cpu,
        connections=workers,
        extra={"target_rate": round(rate, 1)},
    )
