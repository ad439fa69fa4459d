"""Where the machine's CPU and memory go during a benchmark, read from /proc.

CPU is accounted per group of processes (each paxmart component's process group,
Postgres, RabbitMQ, Redis, the load generator, everything else) as the difference of
utime+stime between two snapshots, so the report can say who used the two cores.
Memory is the resident set (VmRSS) of each component's processes, sampled while the
load runs, and beside it their proportional set (Pss): RSS counts the pages processes
share (the interpreter, the libraries, what a fork left in common) once per process, PSS
divides each shared page among its sharers, so its sum is the memory the stack takes.
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

TICKS_PER_S = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")
# Process names of the servers paxmart runs on, as /proc/<pid>/stat shows them.
SERVER_NAMES = {"postgres": "postgres", "beam.smp": "rabbitmq", "redis-server": "redis"}


@dataclass(frozen=True)
class ProcStat:
    pid: int
    name: str
    pgid: int
    cpu_ticks: int


def read_stat(pid: int) -> ProcStat | None:
    """One process's name, process group and CPU ticks; None when it is gone."""
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    name = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields[0] is field 3 of proc(5): state, ppid, pgrp, ..., utime (14), stime (15).
    return ProcStat(pid, name, int(fields[2]), int(fields[11]) + int(fields[12]))


def all_stats() -> list[ProcStat]:
    stats = (read_stat(int(p.name)) for p in PROC.iterdir() if p.name.isdigit())
    return [s for s in stats if s is not None]


def _proc_field_bytes(pid: int, file: str, field: str) -> int:
    """A `field: N kB` line of /proc/<pid>/<file> in bytes (0 when the process is gone or
    the kernel does not say)."""
    try:
        for line in (PROC / str(pid) / file).read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def rss_bytes(pid: int) -> int:
    return _proc_field_bytes(pid, "status", "VmRSS:")


def pss_bytes(pid: int) -> int:
    return _proc_field_bytes(pid, "smaps_rollup", "Pss:")


def machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine since boot, from /proc/stat."""
    values = [int(v) for v in (PROC / "stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already inside user time
    return total - idle, total


class CpuAccount:
    """CPU seconds used per group between `start()` and `stop()`.

    `groups` maps a process-group id to a label (the paxmart components); servers are
    recognised by name; `extra` labels single pids (the load generator, the bench itself).
    """

    def __init__(self, groups: Callable[[], dict[int, str]], extra: dict[int, str]) -> None:
        self._groups = groups
        self._extra = extra
        self._before: dict[int, ProcStat] = {}
        self._machine: tuple[int, int] = (0, 0)

    def start(self) -> None:
        self._before = {s.pid: s for s in all_stats()}
        self._machine = machine_ticks()

    def stop(self, wall_s: float) -> dict[str, object]:
        after = all_stats()
        busy, total = machine_ticks()
        groups = self._groups()
        used: dict[str, float] = defaultdict(float)
        for stat in after:
            before = self._before.get(stat.pid)
            same = before is not None and before.name == stat.name
            ticks = stat.cpu_ticks - (before.cpu_ticks if before and same else 0)
            used[self._label(stat, groups)] += ticks / TICKS_PER_S
        cores = os.cpu_count() or 1
        busy_share = (busy - self._machine[0]) / max(1, total - self._machine[1])
        return {
            "wall_s": round(wall_s, 2),
            "cores": cores,
            "machine_busy_share": round(busy_share, 3),
            "cpu_s": {k: round(v, 2) for k, v in sorted(used.items(), key=lambda kv: -kv[1])},
        }

    def _label(self, stat: ProcStat, groups: dict[int, str]) -> str:
        if stat.pid in self._extra:
            return self._extra[stat.pid]
        if stat.pgid in groups:
            return groups[stat.pgid]
        return SERVER_NAMES.get(stat.name, "other")


class RssSampler:
    """Samples the summed RSS (and PSS) of some processes on a thread; keeps the largest
    totals seen."""

    def __init__(
        self, members: Callable[[], Mapping[str, Iterable[int]]], every_s: float = 0.5
    ) -> None:
        self._members = members
        self._every_s = every_s
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self.max_total = 0
        self.at_max: dict[str, int] = {}
        self.max_pss = 0

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._halt.set()
        self._thread.join()

    def sample(self) -> None:
        per_name = {name: sum(map(rss_bytes, pids)) for name, pids in self._members().items()}
        total = sum(per_name.values())
        if total > self.max_total:
            self.max_total, self.at_max = total, per_name
        pss = sum(pss_bytes(pid) for pids in self._members().values() for pid in pids)
        self.max_pss = max(self.max_pss, pss)

    def _run(self) -> None:
        while True:
            self.sample()
            if self._halt.wait(self._every_s):
                return

    def as_json(self) -> dict[str, object]:
        mib = 1024 * 1024
        return {
            "max_total_mib": round(self.max_total / mib, 1),
            "max_pss_mib": round(self.max_pss / mib, 1),
            "per_component_mib": {k: round(v / mib, 1) for k, v in self.at_max.items()},
        }
