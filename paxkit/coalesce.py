"""Group calls: concurrent callers' items for the same key leave as one call.

While a call for a key is in flight, new items for that key wait; when it returns, the
first waiter takes everything that gathered (up to `max_batch`) and sends it as the next
call. Nobody waits for a timer: at low load every item goes alone, at once; under load
calls overlap and batches grow by themselves, as Postgres's group commit does. The caller
gets its own item's result (or the exception of the call that carried it).

The coordinator sends phase 2 of 2PC and TCC through this (coordinator/branches.py), so
that one request to a participant commits the branches of many transactions.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
I = TypeVar("I")  # noqa: E741
R = TypeVar("R")

Send = Callable[[K, Sequence[I]], Sequence[R]]


class WaitedTooLong(Exception):
    """The item's batch did not come back in time (it may still be sent: items must be
    idempotent)."""


@dataclass(eq=False)
class _Slot(Generic[I, R]):
    item: I
    done: threading.Event = field(default_factory=threading.Event)
    lead: bool = False
    result: R | None = None
    error: BaseException | None = None


class GroupCall(Generic[K, I, R]):
    """`call(key, item)` as one `send(key, items)` with the other items waiting for `key`."""

    def __init__(self, send: Send[K, I, R], max_batch: int, wait_s: float) -> None:
        self._send = send
        self.max_batch = max_batch
        self.wait_s = wait_s
        self._lock = threading.Lock()
        self._waiting: dict[K, deque[_Slot[I, R]]] = {}
        self._busy: set[K] = set()

    def call(self, key: K, item: I) -> R:
        slot: _Slot[I, R] = _Slot(item)
        with self._lock:
            self._waiting.setdefault(key, deque()).append(slot)
            slot.lead = key not in self._busy
            self._busy.add(key)
        if not slot.lead:
            self._wait(key, slot)
        if slot.lead:
            self._send_next(key)
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]

    def _wait(self, key: K, slot: _Slot[I, R]) -> None:
        """Until the item's result is in, or it is this caller's turn to send."""
        slot.done.wait(self.wait_s)
        with self._lock:
            if not slot.done.is_set():
                waiting = self._waiting.get(key, deque())
                if slot in waiting:  # not sent yet: it leaves the queue with its caller
                    waiting.remove(slot)
                raise WaitedTooLong(f"no answer for a batch of {key!r} in {self.wait_s:.1f}s")
            if slot.lead:  # woken to send the next batch, which holds this item
                slot.done.clear()

    def _send_next(self, key: K) -> None:
        batch = self._take(key)
        try:
            results = self._send(key, [s.item for s in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} results for a batch of {len(batch)}")
            for slot, result in zip(batch, results, strict=True):
                slot.result = result
        except Exception as err:  # every caller of the batch gets it
            for slot in batch:
                slot.error = err
        self._hand_over(key)
        for slot in batch:
            slot.done.set()

    def _take(self, key: K) -> list[_Slot[I, R]]:
        with self._lock:
            waiting = self._waiting[key]
            return [waiting.popleft() for _ in range(min(self.max_batch, len(waiting)))]

    def _hand_over(self, key: K) -> None:
        """The first waiter, if any, sends the next batch; else the key is idle."""
        with self._lock:
            waiting = self._waiting[key]
            if waiting:
                waiting[0].lead = True
                waiting[0].done.set()
            else:
                self._busy.discard(key)
                del self._waiting[key]
