"""Sampling the stack's Python processes with py-spy while a benchmark runs.

One `py-spy record --format raw --nonblocking` per process (every member of each web and
worker process group), for a bounded time, at a modest rate. Choices:

- `--gil` (the default here, `threads="gil"`): each sample is the stack of the thread
  holding the GIL, i.e. the Python code running (or preempted while running). Without
  it (`threads="running"`) py-spy reads every thread's stack each time and keeps those
  the kernel has running or runnable: in a web process of 33 threads that cost 0.93 s
  of py-spy CPU per 4 s at 100 Hz against 0.07 s with `--gil`, on a machine of two
  cores whose CPU is what the bench measures. The price: CPU a thread spends with the
  GIL released (socket and libpq syscalls inside the HTTP client, the server and
  psycopg2; most of the kernel's share) is not seen where it happens; scaling spreads it
  over the layers in proportion. `--idle` is never used: idle threads are not CPU.
- `--nonblocking`: py-spy reads the stacks without stopping the process, so the stack
  under test is not paused 100 times a second; a torn stack is a rare wrong sample.

The load starts once every py-spy has attached (py-spy takes a while to attach to a
process on a busy machine) and each gets SIGINT, by its own pid, as soon as the load ends:
py-spy then writes what it has, so every sampler covers the whole load and little else.
One that does not exit within seconds gets SIGKILL; and `--duration` bounds each one
anyway, should the bench itself die. A py-spy that is missing or cannot attach is
reported with its reason, never guessed around.
"""

from __future__ import annotations

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
THREADS = ("gil", "running")
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
    threads: str = "gil"
    samples: dict[str, dict[str, int]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    errors: int = 0

    def as_json(self) -> dict[str, object]:
        return {
            "available": self.available,
            "why": self.why,
            "rate_hz": self.rate_hz,
            "threads": self.threads,
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
    """One py-spy per target from `start()` to `finish()`, at most `seconds` plus a grace;
    as a context manager none outlives the block."""

    def __init__(
        self,
        targets: Sequence[Target],
        seconds: float,
        out_dir: Path,
        rate_hz: int = RATE_HZ,
        threads: str = "gil",
    ) -> None:
        self._targets = list(targets)
        self._threads = threads
        self._bound_s = round(seconds + ATTACH_TIMEOUT_S + GRACE_S)
        self._out_dir = out_dir
        self._rate = rate_hz
        self._runs: list[_Run] = []
        self._why = ""

    def __enter__(self) -> Spy:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._end_all()

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
        deadline = time.monotonic() + ATTACH_TIMEOUT_S
        while time.monotonic() < deadline and not all(map(_settled, self._runs)):
            time.sleep(0.05)

    def finish(self) -> Sampling:
        """End every py-spy (each writes its samples) and count the samples by layer."""
        if not self._runs:
            return Sampling(False, self._why or "nothing to sample", self._rate, self._threads)
        self._end_all()
        return self._collect()

    def _end_all(self) -> None:
        for run in self._runs:
            _interrupt(run.popen)
        for run in self._runs:
            _reap(run.popen)

    def _spawn(self, binary: str, target: Target) -> _Run:
        stem = self._out_dir / f"{target.name}-{target.pid}"
        output, stderr = stem.with_suffix(".txt"), stem.with_suffix(".err")
        output.unlink(missing_ok=True)
        command = [
            binary,
            "record",
            *("--format", "raw", "--full-filenames", "--nonblocking"),
            *("--rate", str(self._rate), "--duration", str(self._bound_s)),
            *("--pid", str(target.pid), "--output", str(output)),
            *(["--gil"] if self._threads == "gil" else []),
        ]
        with stderr.open("wb") as err:
            popen = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT
            )
        return _Run(target, output, stderr, popen)

    def _collect(self) -> Sampling:
        sampling = Sampling(True, rate_hz=self._rate, threads=self._threads)
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


def _interrupt(popen: subprocess.Popen[bytes]) -> None:
    """SIGINT, by this process's own pid: py-spy writes its samples and exits."""
    if popen.poll() is None:
        popen.send_signal(signal.SIGINT)


def _reap(popen: subprocess.Popen[bytes]) -> None:
    """Wait for an interrupted py-spy; SIGKILL it if it lingers."""
    try:
        popen.wait(timeout=STOP_S)
    except subprocess.TimeoutExpired:
        popen.kill()
        popen.wait(timeout=STOP_S)


def _reason(stderr_text: str, code: int | None) -> str:
    """py-spy's `Error:` line (its first: a backtrace may follow), else its exit code."""
    errors = [ln.strip() for ln in stderr_text.splitlines() if ln.startswith("Error:")]
    return errors[0][:200] if errors else f"py-spy wrote no samples (exit code {code})"
