"""Worker processes: `python -m paxkit.worker <component>` runs the component's background
work (relays, consumers, recovery, reconcilers, retention) until SIGTERM or SIGINT.

On the signal every piece of work is stopped in reverse start order, each within its
grace (a consumer finishes its in-flight messages and acks them, or leaves them to be
redelivered); the process exits within `--grace` seconds per piece of work.

Once every piece of work has started, the main loop touches a heartbeat file every
HEARTBEAT_S seconds until the stop; `python -m paxkit.worker <component> --probe` exits 0
while that file is fresh (a container's readiness and liveness probe: a worker serves no HTTP).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from paxkit.bootstrap import bootstrap
from paxkit.component import Background, Component
from paxkit.config import load_settings
from paxkit.logs import configure_logging
from paxkit.multiproc import prepare_multiprocess_dir

log = logging.getLogger(__name__)

GRACE_S = 10.0
HEARTBEAT_S = 5.0
# A heartbeat older than this: the worker is not (or no longer) running its work.
PROBE_MAX_AGE_S = 30.0


def heartbeat_file(state_dir: Path, component: str) -> Path:
    """Where the worker of `component` beats (one worker per container or state folder)."""
    return state_dir / "heartbeats" / f"{component}-worker"


def beat(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def heartbeat_age_s(path: Path) -> float | None:
    """Seconds since the last beat; None when the worker never beat."""
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None


def run(
    component: Component,
    stop: threading.Event,
    grace_s: float = GRACE_S,
    heartbeat: Path | None = None,
) -> None:
    """Start the component's background work, beat until `stop`, then stop it all."""
    running: list[Background] = []
    try:
        for work in component.background():
            running.append(work.start())
        log.info("worker of %s runs %s", component.name, [w.name for w in running])
        while heartbeat is not None and not stop.is_set():
            beat(heartbeat)
            stop.wait(HEARTBEAT_S)
        stop.wait()
    finally:
        if heartbeat is not None:
            heartbeat.unlink(missing_ok=True)
        for work in reversed(running):
            work.stop(grace_s)
        component.close()
        log.info("worker of %s stopped", component.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a paxmart component's background work.")
    parser.add_argument("component")
    parser.add_argument("--grace", type=float, default=GRACE_S, help="seconds per piece of work")
    parser.add_argument(
        "--probe",
        action="store_true",
        help="run nothing: exit 0 while the worker's heartbeat is fresh",
    )
    args = parser.parse_args(argv)
    if args.probe:
        return probe(args.component)
    prepare_multiprocess_dir()
    component = bootstrap(args.component)
    configure_logging(f"{component.name}-worker", component.settings.log_level)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("%s received, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    run(component, stop, args.grace, heartbeat_file(component.settings.state_dir, component.name))
    return 0


def probe(component: str, max_age_s: float = PROBE_MAX_AGE_S) -> int:
    """0 while the component's worker beat within `max_age_s`, else 1 (and says why)."""
    age = heartbeat_age_s(heartbeat_file(load_settings().state_dir, component))
    if age is not None and age <= max_age_s:
        return 0
    print(
        f"worker of {component}: "
        + ("no heartbeat" if age is None else f"last beat {age:.0f}s ago"),
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
