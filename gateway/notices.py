"""Notices between gateway processes over Redis pub/sub: one subscription per process.

Components register a handler per channel (control-state changes, cache invalidations)
and periodic ticks (the control state's version poll). One daemon thread receives and
dispatches. `connected` is true only once the server has confirmed every subscription,
and false from the moment the connection fails: whoever relies on hearing every notice
(the in-process cache copies) asks it first, and is told through `on_connect` and
`on_lost` when that changes.

Redis pub/sub channels are server-wide, not per database, so every channel is prefixed with
the deployment's scope (the one that also names its message queues): a test stack, a
benchmark and `make up` sharing one Redis server never hear each other.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

from gateway.redisguard import UNREACHABLE, RedisGuard, RedisUnavailable

log = logging.getLogger(__name__)

Handler = Callable[[bytes], None]
Hook = Callable[[], None]


class Notices:
    def __init__(self, guard: RedisGuard, poll_s: float, scope: str) -> None:
        self.guard = guard
        self.poll_s = poll_s
        self.scope = scope
        self._handlers: dict[str, Handler] = {}
        self._ticks: list[Hook] = []
        self._on_connect: list[Hook] = []
        self._on_lost: list[Hook] = []
        self._sub: redis.client.PubSub | None = None
        self._confirmed: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def on(self, channel: str, handler: Handler) -> None:
        self._handlers[self.scoped(channel)] = handler

    def scoped(self, channel: str) -> str:
        """The server-wide name of one of this deployment's channels."""
        return f"{self.scope}:{channel}"

    def every_poll(self, tick: Hook) -> None:
        self._ticks.append(tick)

    def on_connect(self, hook: Hook) -> None:
        self._on_connect.append(hook)

    def on_lost(self, hook: Hook) -> None:
        self._on_lost.append(hook)

    @property
    def connected(self) -> bool:
        return self._sub is not None and len(self._confirmed) == len(self._handlers)

    def publish(self, channel: str, data: str) -> bool:
        """Send a notice to every process (this one included); False when Redis is down."""
        try:
            self.guard.run(lambda r: r.publish(self.scoped(channel), data))
        except RedisUnavailable:
            return False
        return True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gateway-notices", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.poll_s + 2.0)
        self._drop()

    def _run(self) -> None:
        next_tick = 0.0
        while not self._stop.is_set():
            if time.monotonic() >= next_tick:
                next_tick = time.monotonic() + self.poll_s
                self._tick()
            self._receive(max(0.0, next_tick - time.monotonic()))

    def _tick(self) -> None:
        for tick in self._ticks:
            try:
                tick()
            except Exception:  # one failing tick must not stop the others or the thread
                log.exception("notice tick %s failed", getattr(tick, "__name__", tick))

    def _receive(self, timeout_s: float) -> None:
        sub = self._subscription()
        if sub is None:
            self._stop.wait(timeout_s)
            return
        try:
            message = sub.get_message(timeout=timeout_s)
        except (*UNREACHABLE, OSError) as err:
            log.warning("notices lost (%s); resubscribing", err)
            self._drop()
            self._stop.wait(timeout_s)
            return
        if message is not None:
            self._dispatch(message)

    def _dispatch(self, message: dict) -> None:
        channel = message["channel"].decode()
        if message["type"] == "subscribe":
            self._confirmed.add(channel)
            if self.connected:
                self._call(self._on_connect)
        elif message["type"] == "message" and channel in self._handlers:
            try:
                self._handlers[channel](message["data"])
            except Exception:
                log.exception("notice handler of %s failed", channel)

    def _subscription(self) -> redis.client.PubSub | None:
        if self._sub is None and self._handlers and self.guard.available:
            try:
                self._sub = self.guard.run(self._subscribe)
            except RedisUnavailable:
                return None
        return self._sub

    def _subscribe(self, client: redis.Redis) -> redis.client.PubSub:
        sub = client.pubsub()
        try:
            sub.subscribe(*self._handlers)
        except UNREACHABLE:
            sub.close()
            raise
        return sub

    def _drop(self) -> None:
        sub, self._sub = self._sub, None
        was_connected = bool(self._confirmed)
        self._confirmed = set()
        if was_connected:
            self._call(self._on_lost)
        if sub is not None:
            try:
                sub.close()
            except (*UNREACHABLE, OSError):
                log.debug("closing a broken subscription failed")

    @staticmethod
    def _call(hooks: list[Hook]) -> None:
        for hook in hooks:
            hook()
