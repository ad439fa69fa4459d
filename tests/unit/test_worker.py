"""A worker process's loop: start every piece of work, and on the stop signal stop them
all in reverse order and release the component."""

from __future__ import annotations

import os
import threading
import time

import pytest

from paxkit import heartbeat
from paxkit.component import Component
from paxkit.config import load_settings
from paxkit.heartbeat import age_s, heartbeat_file
from paxkit.worker import run
from tests.helpers import wait_until

pytestmark = pytest.mark.unit


class Work:
    def __init__(self, name: str, journal: list[str]) -> None:
        self.name = name
        self.journal = journal

    def start(self) -> Work:
        self.journal.append(f"start {self.name}")
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self.journal.append(f"stop {self.name}")


class Shop(Component):
    def __init__(self, journal: list[str]) -> None:
        super().__init__("shop", load_settings())
        self.journal = journal

    def background(self) -> list[Work]:  # type: ignore[override]
        return [Work(n, self.journal) for n in ("relay", "consumer", "recovery")]

    def close(self) -> None:
        self.journal.append("close")


def test_stop_stops_everything_in_reverse_order_and_closes():
    journal: list[str] = []
    stop = threading.Event()
    stop.set()
    run(Shop(journal), stop)
    assert journal == [
        "start relay",
        "start consumer",
        "start recovery",
        "stop recovery",
        "stop consumer",
        "stop relay",
        "close",
    ]


def test_work_already_started_is_stopped_when_a_later_start_fails():
    journal: list[str] = []

    class Broken(Work):
        def start(self) -> Work:
            raise RuntimeError("cannot start")

    class Half(Shop):
        def background(self) -> list[Work]:  # type: ignore[override]
            return [Work("relay", journal), Broken("consumer", journal)]

    with pytest.raises(RuntimeError):
        run(Half(journal), threading.Event())
    assert journal == ["start relay", "stop relay", "close"]


def test_the_worker_beats_while_it_runs_and_its_probe_follows(tmp_path, monkeypatch):
    """The heartbeat exists once every piece of work started and goes with the stop; the
    container probe (`python -m paxkit.heartbeat`) passes while it is fresh, not before,
    not once it is stale, not after."""
    monkeypatch.setenv("PAXMART_STATE_DIR", str(tmp_path))
    path = heartbeat_file(tmp_path, "shop")
    journal: list[str] = []
    stop = threading.Event()
    assert heartbeat.main(["shop"]) == 1
    thread = threading.Thread(target=run, args=(Shop(journal), stop, 1.0, path))
    thread.start()
    try:
        wait_until(lambda: age_s(path) is not None, 5.0, 0.01, "the first beat")
        assert journal[:3] == ["start relay", "start consumer", "start recovery"]
        assert heartbeat.main(["shop"]) == 0
        old = time.time() - heartbeat.PROBE_MAX_AGE_S - 1
        os.utime(path, (old, old))
        assert heartbeat.main(["shop"]) == 1
    finally:
        stop.set()
        thread.join(5.0)
    assert not thread.is_alive()
    assert age_s(path) is None
    assert heartbeat.main(["shop"]) == 1
