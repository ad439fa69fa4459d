"""Sampling the stack's Python processes with py-spy while a benchmark runs.

One `py-spy record --format raw --nonblocking` per process (every member of each web and
worker process group), for a bounded time, at a modest rate. Choices:

- on-CPU only: neither `--idle` (which would add the dozens of threads parked in
  `select` or a condition wait) nor `--gil`. py-spy then keeps the threads the kernel
  has running or runnable; `--gil` would keep only the GIL holder and so charge the CPU
  a thread spends with the GIL released (libpq, socket syscalls inside psycopg2 and the
  HTTP client) to whatever Python code holds the GIL meanwhile. At saturation a
  runnable thread waiting for a core counts too: the split is of time wanting CPU,
  scaled to the CPU /proc measured.
- `--nonblocking`: py-spy reads the stacks without stopping the process, so the stack
  under test is not paused 100 times a second; a torn stack is a rare wrong sample.

Each py-spy ends on its own after `--duration`; one still running past its grace gets
SIGINT (py-spy then writes what it has), then SIGKILL, by its own pid. A py-spy that is
missing or cannot attach is reported with its reason, never guessed around.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from infra.bench.layers import parse_raw
from paxkit.config import REPO_ROOT

RATE_HZ = 100
ATTACH_TIMEOUT_S = 10.0
GRACE_S = 10.0
STOP_S = 5.0
ATTACHED = "Sampling process"
SUMMARY = re.compile(r"Samples: (\d+) Errors: (\d+)")


@dataclass(frozen=True)
class Target:
    """One process to sample: its name in the stack (`order`, `order-worker`) and pid."""

    name: str
    pid: int


@dataclass
class Sampling:
    """What the samplers saw: on-CPU samples per process name and layer, and why any
    target gave none."""

    available: bool
    why: str = ""
    rate_hz: int = RATE_HZ
    samples: dict[str, dict[str, int]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    errors: int = 0

    def as_json(self) -> dict[str, object]:
        return {
            "available": self.available,
            "why": self.why,
            "rate_hz": self.rate_hz,
            "samples": self.samples,
            "failures": self.failures,
            "py_spy_errors": self.errors,
        }


def py_spy() -> str | None:
    """The py-spy beside this interpreter (the project's virtualenv), else on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


@dataclass
class _Run:
    target: Target
    output: Path
    stderr: Path
    popen: subprocess.Popen[bytes]


class Spy:
    """One py-spy per target for `seconds`; as a context manager none outlives the block."""

    def __init__(
        self, targets: Sequence[Target], seconds: float, out_dir: Path, rate_hz: int = RATE_HZ
    ) -> None:
        self._targets = list(targets)
        self._seconds = max(1, round(seconds))
        self._out_dir = out_dir
        self._rate = rate_hz
        self._runs: list[_Run] = []
        self._why = ""
        self._started = 0.0

    def __enter__(self) -> Spy:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for run in self._runs:
            _end(run.popen)

    @property
    def pids(self) -> list[int]:
        return [run.popen.pid for run in self._runs]

    def start(self) -> None:
        """Attach to every target; wait (bounded) until each says it samples."""
        if not self._targets:
            return
        binary = py_spy()
        if binary is None:
            self._why = "py-spy is not installed (pip install py-spy, the dev extra has it)"
            return
        self._out_dir.mkdir(parents=True, exist_ok=True)
        for target in self._targets:
            self._runs.append(self._spawn(binary, target))
        self._started = time.monotonic()
        deadline = self._started + ATTACH_TIMEOUT_S
        while time.monotonic() < deadline and not all(map(_settled, self._runs)):
            time.sleep(0.05)

    def finish(self) -> Sampling:
        """Wait for every py-spy (ending overrunners) and count its samples by layer."""
        if not self._runs:
            return Sampling(False, self._why or "nothing to sample", self._rate)
        deadline = self._started + ATTACH_TIMEOUT_S + self._seconds + GRACE_S
        for run in self._runs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                run.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
            _end(run.popen)
        return self._collect()

    def _spawn(self, binary: str, target: Target) -> _Run:
        stem = self._out_dir / f"{target.name}-{target.pid}"
        output, stderr = stem.with_suffix(".txt"), stem.with_suffix(".err")
        output.unlink(missing_ok=True)
        command = [
            binary,
            "record",
            *("--format", "raw", "--full-filenames", "--nonblocking"),
            *("--rate", str(self._rate), "--duration", str(self._seconds)),
            *("--pid", str(target.pid), "--output", str(output)),
        ]
        with stderr.open("wb") as err:
            popen = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT
            )
        return _Run(target, output, stderr, popen)

    def _collect(self) -> Sampling:
        sampling = Sampling(True, rate_hz=self._rate)
        for run in self._runs:
            said = run.stderr.read_text(errors="replace")
            if summary := SUMMARY.search(said):
                sampling.errors += int(summary.group(2))
            if not run.output.exists():
                key = f"{run.target.name} pid {run.target.pid}"
                sampling.failures[key] = _reason(said, run.popen.returncode)
                continue
            counts = parse_raw(run.output.read_text(errors="replace"), str(REPO_ROOT))
            mine = sampling.samples.setdefault(run.target.name, {})
            for layer, n in counts.items():
                mine[layer] = mine.get(layer, 0) + n
        if not sampling.samples:
            sampling.available = False
            sampling.why = "py-spy sampled no process: " + "; ".join(
                f"{k}: {v}" for k, v in list(sampling.failures.items())[:3]
            )
        return sampling


def _settled(run: _Run) -> bool:
    """Attached (py-spy said it samples) or already gone."""
    if run.popen.poll() is not None:
        return True
    try:
        return ATTACHED in run.stderr.read_text(errors="replace")
    except OSError:
        return False


def _end(popen: subprocess.Popen[bytes]) -> None:
    """SIGINT (py-spy writes its samples), then SIGKILL, by this process's own pid."""
    if popen.poll() is not None:
        return
    popen.send_signal(signal.SIGINT)
    try:
        popen.wait(timeout=STOP_S)
    except subprocess.TimeoutExpired:
        popen.kill()
        popen.wait(timeout=STOP_S)


def _reason(stderr_text: str, code: int | None) -> str:
    """py-spy's last words, else its exit code."""
    lines = [ln.strip() for ln in stderr_text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "rror" in ln] or lines
    return errors[-1][:200] if errors else f"py-spy exited with code {code}"
