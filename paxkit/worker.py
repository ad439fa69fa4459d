"""Worker processes: `python -m paxkit.worker <component>` runs the component's background
work (relays, consumers, recovery, reconcilers, retention) until SIGTERM or SIGINT.

On the signal every piece of work is stopped in reverse start order, each within its
grace (a consumer finishes its in-flight messages and acks them, or leaves them to be
redelivered); the process exits within `--grace` seconds per piece of work.

Once every piece of work has started, the main loop beats (paxkit/heartbeat.py) until the
stop: a container's probe, `python -m paxkit.heartbeat <component>`, asks that beat.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from paxkit.bootstrap import bootstrap
from paxkit.component import Background, Component
from paxkit.heartbeat import INTERVAL_S, beat, heartbeat_file
from paxkit.logs import configure_logging
from paxkit.multiproc import prepare_multiprocess_dir

log = logging.getLogger(__name__)

GRACE_S = 10.0


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
            stop.wait(INTERVAL_S)
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
    args = parser.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
