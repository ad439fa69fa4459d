"""Group calls: items that gather while a call is in flight leave together, each caller
gets its own result, and nothing waits when nothing is in flight."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from paxkit.coalesce import GroupCall, WaitedTooLong


class Recorder:
    """A send that records its batches and, while `gate` is closed, blocks the first one."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.batches: list[tuple[str, list[int]]] = []
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.fail_on = fail_on

    def __call__(self, key: str, items: Sequence[int]) -> list[str]:
        self.batches.append((key, list(items)))
        self.entered.set()
        self.gate.wait(5)
        if self.fail_on in items:
            raise ConnectionError(f"batch with {self.fail_on} lost")
        return [f"{key}:{item}" for item in items]


def behind_one_in_flight(pool, group, send, key, first, rest):
    """Send `first` and, once its call is in flight (held by the gate), queue `rest` behind
    it; then open the gate. The futures of first and of rest."""
    head = pool.submit(group.call, key, first)
    assert send.entered.wait(5)
    tail = [pool.submit(group.call, key, item) for item in rest]
    wait_until(lambda: queued(group, key, len(tail)))
    send.gate.set()
    return head, tail


def queued(group: GroupCall, key: str, count: int) -> bool:
    with group._lock:
        return len(group._waiting.get(key, ())) >= count


def wait_until(condition, timeout_s: float = 5.0) -> None:
    """Poll `condition` until it holds, or fail at the deadline."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        threading.Event().wait(0.005)


def test_an_item_alone_goes_at_once_alone():
    send = Recorder()
    send.gate.set()
    group = GroupCall(send, max_batch=10, wait_s=5)
    assert group.call("inventory", 1) == "inventory:1"
    assert group.call("inventory", 2) == "inventory:2"
    assert send.batches == [("inventory", [1]), ("inventory", [2])]


def test_items_gathered_during_a_call_leave_together_and_each_gets_its_own_result():
    send = Recorder()
    group = GroupCall(send, max_batch=10, wait_s=5)
    with ThreadPoolExecutor(8) as pool:
        first, rest = behind_one_in_flight(pool, group, send, "coupon", 0, range(1, 8))
        assert first.result(5) == "coupon:0"
        assert [f.result(5) for f in rest] == [f"coupon:{n}" for n in range(1, 8)]
    assert send.batches == [("coupon", [0]), ("coupon", list(range(1, 8)))]


def test_a_batch_holds_at_most_max_batch_items():
    send = Recorder()
    group = GroupCall(send, max_batch=3, wait_s=5)
    with ThreadPoolExecutor(8) as pool:
        first, rest = behind_one_in_flight(pool, group, send, "k", 0, range(1, 8))
        results = [first.result(5), *(f.result(5) for f in rest)]
    assert results == [f"k:{n}" for n in range(8)]
    assert [items for _, items in send.batches] == [[0], [1, 2, 3], [4, 5, 6], [7]]


def test_keys_do_not_wait_for_each_other():
    send = Recorder()
    group = GroupCall(send, max_batch=10, wait_s=5)
    with ThreadPoolExecutor(2) as pool:
        blocked = pool.submit(group.call, "slow", 1)
        assert send.entered.wait(5)
        other = pool.submit(group.call, "other", 2)
        wait_until(lambda: len(send.batches) == 2)
        send.gate.set()
        assert (blocked.result(5), other.result(5)) == ("slow:1", "other:2")


def test_a_failed_call_fails_every_item_it_carried_and_the_next_batch_still_goes():
    send = Recorder(fail_on=2)
    group = GroupCall(send, max_batch=2, wait_s=5)
    with ThreadPoolExecutor(4) as pool:
        first, rest = behind_one_in_flight(pool, group, send, "k", 0, (1, 2, 3))
        assert first.result(5) == "k:0"
        for future in rest[:2]:
            with pytest.raises(ConnectionError):
                future.result(5)
        assert rest[2].result(5) == "k:3"


def test_a_waiter_that_gives_up_leaves_the_queue_and_the_key_stays_usable():
    send = Recorder()
    group = GroupCall(send, max_batch=10, wait_s=0.2)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(group.call, "k", 0)
        assert send.entered.wait(5)
        with pytest.raises(WaitedTooLong):
            group.call("k", 1)
        send.gate.set()
        assert first.result(5) == "k:0"
    assert group.call("k", 2) == "k:2"
    assert send.batches == [("k", [0]), ("k", [2])]


def test_a_send_answering_the_wrong_number_of_results_fails_its_callers():
    group: GroupCall[str, int, str] = GroupCall(lambda key, items: [], max_batch=5, wait_s=1)
    with pytest.raises(RuntimeError, match="0 results for a batch of 1"):
        group.call("k", 1)
