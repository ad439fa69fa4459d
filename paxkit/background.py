"""Periodic background work (recovery, reconciliation) on a daemon thread."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Loop:
    """Runs `work` every `interval_s` until stopped; an error is logged, never fatal."""

    def __init__(self, name: str, work: Callable[[], object], interval_s: float) -> None:
        self.name = name
        self.work = work
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Loop:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def run_once(self) -> None:
        try:
            self.work()
        except Exception:
            log.exception("background loop %s failed; retrying next turn", self.name)

    def _run(self) -> None:
        while True:
            self.run_once()
            if self._stop.wait(self.interval_s):
                return
