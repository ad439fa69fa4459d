"""Read cache (缓存) for product reads: cache-aside in Redis, hardened for hot keys.

- Cache-aside: a read looks in Redis; on a miss it loads from inventory and stores the
  answer. The fresh copy lives `ttl_s` with ±`jitter` (so keys warmed together do not
  expire together, 缓存雪崩).
- Single flight (缓存击穿): on a miss one request per key (whoever takes the
  `flight` lock, SET NX PX) rebuilds it; the others poll for the fresh copy and load
  themselves only if the rebuild ends without one or takes longer than `flight_s`.
- Negative caching (缓存穿透): a 404 is cached for `negative_ttl_s`, so unknown SKUs do
  not each reach the database; only well-formed SKUs get a key at all.
- Warm-up (数据预热): at start one gateway process per TTL loads the whole catalogue.
- Invalidation: the gateway drops the fresh copies of every SKU of every order it
  forwards, before and after forwarding it, whatever the outcome; stock changed by other
  paths (recovery, async settlement) is at most one TTL old for others. The client who
  orders reads around the cache (neither from it nor into it) while its order runs and
  for `own_reads_s` afterwards: read-your-writes, even across gateway processes.
- Stale but served: each 200 is also kept as a stale copy for `stale_ttl_s`; when the
  upstream fails (error, timeout, open breaker) the stale copy is served, marked with
  `X-Cache: STALE` and `Warning: 110 - "Response is Stale"`.
- Redis down: reads go straight to the upstream (`X-Cache: BYPASS`); the breaker still
  protects it.
- In-process copies (two-level cache, 本地缓存 + Redis): a hit is also kept in the
  process for `local_ttl_s` (1 s), so a hot product costs no Redis round trip at all.
  Every invalidation (the SKUs of an order, the client's read-around window) is also
  published to every gateway process (gateway/notices.py), which drops those copies and
  notes the window. The copies are used only while this process hears every notice: they
  are dropped when the subscription fails and skipped while Redis is known to be down. A
  copy can outlive a change made behind the gateway's back (a key deleted by hand, stock
  changed by recovery) by at most `local_ttl_s`.
"""

from __future__ import annotations

import json
import logging
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import redis

from gateway import metrics
from gateway.notices import Notices
from gateway.redisguard import RedisGuard, RedisUnavailable
from paxkit.errors import ApiError

log = logging.getLogger(__name__)

T = TypeVar("T")
# Delete the flight lock only if it is still ours.
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class CachePolicy:
    ttl_s: float = 10.0
    jitter: float = 0.2
    negative_ttl_s: float = 5.0
    stale_ttl_s: float = 3600.0
    own_reads_s: float = 5.0
    flight_s: float = 3.0
    poll_s: float = 0.01
    local_ttl_s: float = 1.0
    local_capacity: int = 10_000


@dataclass(frozen=True)
class Entry:
    """An upstream answer as served: status and JSON body bytes."""

    status: int
    body: bytes

    def encode(self) -> bytes:
        return b"%d " % self.status + self.body

    @classmethod
    def decode(cls, raw: bytes | str) -> Entry:
        data = raw.encode() if isinstance(raw, str) else raw
        status, _, body = data.partition(b" ")
        return cls(int(status), body)


OUTCOMES = ("hit", "miss", "stale", "bypass")


@dataclass(frozen=True)
class Served:
    entry: Entry
    outcome: str  # one of OUTCOMES


Loader = Callable[[], Entry]


class LocalCopies:
    """This process's copies of cache entries, and the clients reading around the cache.

    `generation` moves on every drop: a copy read from Redis before a drop is not kept."""

    def __init__(
        self, ttl_s: float, capacity: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_s = ttl_s
        self.capacity = capacity
        self.clock = clock
        self.generation = 0
        self._entries: dict[str, tuple[Entry, float]] = {}
        self._around: dict[str, float] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Entry | None:
        item = self._entries.get(name)
        if item is None or item[1] < self.clock():
            return None
        return item[0]

    def put(self, name: str, entry: Entry, generation: int) -> None:
        if self.ttl_s <= 0:
            return
        with self._lock:
            if generation != self.generation:
                return
            if len(self._entries) >= self.capacity:
                self._entries.clear()
            self._entries[name] = (entry, self.clock() + self.ttl_s)

    def drop(self, names: Iterable[str]) -> None:
        with self._lock:
            self.generation += 1
            for name in names:
                self._entries.pop(name, None)

    def clear(self) -> None:
        with self._lock:
            self.generation += 1
            self._entries.clear()

    def read_around(self, client: str, window_s: float) -> None:
        now = self.clock()
        with self._lock:
            if len(self._around) >= self.capacity:
                self._around = {c: t for c, t in self._around.items() if t > now}
            self._around[client] = now + window_s

    def reading_around(self, client: str) -> bool:
        until = self._around.get(client)
        return until is not None and until > self.clock()


class ReadCache:
    def __init__(
        self, guard: RedisGuard, namespace: str, policy: CachePolicy, notices: Notices
    ) -> None:
        self.guard = guard
        self.ns = namespace
        self.policy = policy
        self.notices = notices
        self.local = LocalCopies(policy.local_ttl_s, policy.local_capacity)
        self.channel = f"{namespace}:cache:invalidate"
        self._release = guard.client.register_script(_RELEASE_LUA)
        notices.on(self.channel, self._invalidated)
        notices.on_connect(self.local.clear)
        notices.on_lost(self.local.clear)

    def lookup_keys(self, name: str, client: str) -> list[str]:
        """What a read of `name` by `client` looks at first (see `read`'s looked_up)."""
        return [self._fresh(name), self._own(client)]

    def read(
        self,
        name: str,
        load: Loader,
        client: str,
        looked_up: Sequence[Any] | None = None,
    ) -> Served:
        """The entry for `name`, from the cache when possible. `looked_up`: the values of
        lookup_keys() if the caller already fetched them (one round trip with the limiter)."""
        generation = None
        if looked_up is None:
            local = self._local_copy(name, client)
            if local is not None:
                return _count(Served(local, "hit"))
            generation = self.local.generation
            try:
                looked_up = self.guard.run(lambda r: r.mget(self.lookup_keys(name, client)))
            except RedisUnavailable:
                return _count(self._fetch(name, load, "bypass", store=False))
        cached, own = looked_up
        if own is not None:  # read around the cache: neither from it nor into it
            return _count(self._fetch(name, load, "bypass", store=False))
        if cached is not None:
            entry = Entry.decode(cached)
            if generation is not None:
                self.local.put(name, entry, generation)
            return _count(Served(entry, "hit"))
        return _count(self._single_flight(name, load))

    def _local_copy(self, name: str, client: str) -> Entry | None:
        """This process's copy, if it can be trusted: every notice heard, Redis up, and the
        client not reading around the cache."""
        if not (self.notices.connected and self.guard.available):
            return None
        if self.local.reading_around(client):
            return None
        return self.local.get(name)

    def read_direct(self, load: Loader) -> Served:
        """An uncacheable read, counted as a bypass."""
        return _count(Served(load(), "bypass"))

    def around_order(self, names: Iterable[str], client: str, window_s: float) -> None:
        """Drop the fresh copies an order may change and let the client read around the
        cache for `window_s`: called before the order is forwarded (its reads while it
        runs, or while recovery finishes it, are fresh) and after (for `own_reads_s`).
        Every gateway process hears of it and drops its own copies too."""
        names = list(names)
        keys = [self._fresh(name) for name in names]
        self._apply(names, client, window_s)
        notice = json.dumps({"names": names, "client": client, "window_s": window_s})

        def run(r: redis.Redis) -> None:
            pipe = r.pipeline(transaction=False)
            if keys:
                pipe.delete(*keys)
            pipe.set(self._own(client), b"1", px=_ms(window_s))
            pipe.publish(self.notices.scoped(self.channel), notice)
            pipe.execute()

        try:
            self.guard.run(run)
        except RedisUnavailable:
            log.warning("cache not invalidated for %s (Redis down); TTL bounds staleness", keys)

    def _invalidated(self, data: bytes) -> None:
        notice = json.loads(data)
        self._apply(notice["names"], notice["client"], float(notice["window_s"]))

    def _apply(self, names: Iterable[str], client: str, window_s: float) -> None:
        self.local.drop(names)
        self.local.read_around(client, window_s)

    def warm(self, entries: dict[str, Entry]) -> bool:
        """Store many entries at once; False when another process warmed up recently."""
        lock = f"{self.ns}:warmup"

        def run(r: redis.Redis) -> bool:
            if not r.set(lock, b"1", nx=True, px=_ms(self.policy.ttl_s)):
                return False
            pipe = r.pipeline(transaction=False)
            for name, entry in entries.items():
                self._queue_store(pipe, name, entry)
            pipe.execute()
            return True

        return self.guard.run(run)

    def _single_flight(self, name: str, load: Loader) -> Served:
        token = secrets.token_hex(8).encode()
        flight = self._flight(name)
        try:
            leader = self.guard.run(
                lambda r: r.set(flight, token, nx=True, px=_ms(self.policy.flight_s))
            )
        except RedisUnavailable:
            return self._fetch(name, load, "bypass", store=False)
        if not leader:
            return self._follow(name, load)
        try:
            return self._fetch(name, load)
        finally:
            self._try(lambda r: self._release(keys=[flight], args=[token], client=r))

    def _follow(self, name: str, load: Loader) -> Served:
        """Wait for the leader's copy; load ourselves if it ends without one or too late."""
        deadline = time.monotonic() + self.policy.flight_s
        while time.monotonic() < deadline:
            time.sleep(self.policy.poll_s)
            try:
                cached, flying = self.guard.run(
                    lambda r: r.mget(self._fresh(name), self._flight(name))
                )
            except RedisUnavailable:
                break
            if cached is not None:
                return Served(Entry.decode(cached), "hit")
            if flying is None:
                break
        return self._fetch(name, load)

    def _fetch(self, name: str, load: Loader, outcome: str = "miss", store: bool = True) -> Served:
        """Load from the upstream; on failure serve the stale copy if there is one."""
        try:
            entry = load()
        except ApiError:
            stale = self._stale(name)
            if stale is None:
                raise
            return Served(stale, "stale")
        if entry.status >= 500:
            stale = self._stale(name)
            return Served(stale, "stale") if stale else Served(entry, outcome)
        if store:
            self._try(lambda r: self._store(r, name, entry))
        return Served(entry, outcome)

    def _stale(self, name: str) -> Entry | None:
        raw = self._try(lambda r: r.get(self._stale_key(name)))
        return Entry.decode(raw) if raw else None

    def _store(self, r: redis.Redis, name: str, entry: Entry) -> None:
        pipe = r.pipeline(transaction=False)
        self._queue_store(pipe, name, entry)
        pipe.execute()

    def _queue_store(self, pipe: redis.client.Pipeline, name: str, entry: Entry) -> None:
        raw = entry.encode()
        if entry.status == 200:
            pipe.set(self._fresh(name), raw, px=self._jittered(self.policy.ttl_s))
            pipe.set(self._stale_key(name), raw, px=_ms(self.policy.stale_ttl_s))
        elif entry.status == 404:
            pipe.set(self._fresh(name), raw, px=self._jittered(self.policy.negative_ttl_s))

    def _jittered(self, ttl_s: float) -> int:
        spread = self.policy.jitter
        return _ms(ttl_s * random.uniform(1 - spread, 1 + spread))

    def _try(self, call: Callable[[redis.Redis], T]) -> T | None:
        """A best-effort Redis call: None when Redis is down."""
        try:
            return self.guard.run(call)
        except RedisUnavailable:
            return None

    def _fresh(self, name: str) -> str:
        return f"{self.ns}:cache:{name}"

    def _stale_key(self, name: str) -> str:
        return f"{self.ns}:stale:{name}"

    def _flight(self, name: str) -> str:
        return f"{self.ns}:flight:{name}"

    def _own(self, client: str) -> str:
        return f"{self.ns}:own:{client}"


_COUNTERS = {outcome: metrics.CACHE.labels(outcome) for outcome in OUTCOMES}


def _count(served: Served) -> Served:
    _COUNTERS[served.outcome].inc()
    return served


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))
