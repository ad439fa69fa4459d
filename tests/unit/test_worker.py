"""A worker process's loop: start every piece of work, and on the stop signal stop them
all in reverse order and release the component."""

from __future__ import annotations

import threading

import pytest

from paxkit.component import Component
from paxkit.config import load_settings
from paxkit.worker import run

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
