"""Rate limiting (限流): atomic token buckets in Redis, with an in-process fallback.

A rule gives a route `rate_per_s` tokens per second up to `burst`, per client (scope
`client`: the `X-Api-Key` header, else the peer address) or shared by everyone (scope
`global`). A request takes one token from the bucket of every rule matching it, all or
nothing, in one Lua script; the script reads the clock with Redis `TIME`, so every
gateway process agrees on time. A bucket's key expires once it would be full again.

Leases: a gateway process takes tokens in small batches, a lease of up to 50 ms of the
rule's rate and never more than 5 % of its burst, and spends them locally for up to a
second before asking Redis again; a slow rule's lease is one token, which is exactly a
call per request. Tokens are only ever spent after the bucket gave them, so the limit
holds in the long run; a window can admit at most one lease per process more than a
strict bucket would, and unspent tokens of an expired lease are lost (stricter, never
looser). On a busy fast rule this saves nearly every round trip.

Answers: every request on a limited route carries `RateLimit-Limit` (the burst),
`RateLimit-Remaining` (whole tokens left) and `RateLimit-Reset` (seconds until the
bucket is full again) of its most constrained rule; a refused one is a 429 with
`Retry-After` (seconds until a token is available).

Failure policy, PAXMART_RATELIMIT_FAILURE_MODE, for while Redis is down or hung (each
Redis call is bounded by a short timeout and then skipped for a second, see redisguard):
- `open` (default): each gateway process limits with its own in-process token buckets
  under the same rules. Requests keep flowing; during the outage the overall rate can
  reach the rule times the number of gateway processes.
- `closed`: requests on limited routes are refused with 503 `rate_limiter_unavailable`
  and `Retry-After: 1` until Redis answers; routes without rules are not affected.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from gateway import metrics
from gateway.redisguard import RedisGuard, RedisUnavailable
from paxkit.errors import ApiError

FAILURE_MODES = ("open", "closed")
SCOPES = ("client", "global")
MAX_LOCAL_BUCKETS = 10_000

LEASE_S = 0.05
LEASE_SHARE = 0.05
LEASE_TTL_S = 1.0

# KEYS: the n buckets (ARGV[1] = n), then keys to read along; ARGV[2..]: rate_1, burst_1,
# want_1, rate_2, burst_2, want_2, ... Only if every bucket has a token, takes from each
# up to `want` whole tokens (at least one). Returns allowed, then per bucket: whole
# tokens left, ms until full, ms until one token is available, tokens taken; then the
# values of the read-along keys (saving the caller a round trip).
TOKEN_BUCKET_LUA = """
local n = tonumber(ARGV[1])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + tonumber(clock[2]) / 1000
local levels = {}
local allowed = 1
for i = 1, n do
  local per_ms = tonumber(ARGV[3 * i - 1]) / 1000
  local burst = tonumber(ARGV[3 * i])
  local state = redis.call('HMGET', KEYS[i], 'tokens', 'ts')
  local tokens = tonumber(state[1]) or burst
  local ts = tonumber(state[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - ts) * per_ms)
  levels[i] = tokens
  if tokens < 1 then allowed = 0 end
end
local out = {allowed}
for i = 1, n do
  local per_ms = tonumber(ARGV[3 * i - 1]) / 1000
  local burst = tonumber(ARGV[3 * i])
  local tokens = levels[i]
  local taken = 0
  if allowed == 1 then taken = math.min(tonumber(ARGV[3 * i + 1]), math.floor(tokens)) end
  tokens = tokens - taken
  local to_full = math.ceil((burst - tokens) / per_ms)
  redis.call('HSET', KEYS[i], 'tokens', tostring(tokens), 'ts', tostring(now))
  redis.call('PEXPIRE', KEYS[i], to_full + 1000)
  out[#out + 1] = math.floor(tokens)
  out[#out + 1] = to_full
  out[#out + 1] = math.ceil(math.max(0, 1 - tokens) / per_ms)
  out[#out + 1] = taken
end
for i = n + 1, #KEYS do
  out[#out + 1] = redis.call('GET', KEYS[i])
end
return out
"""


@dataclass(frozen=True)
class Rule:
    name: str
    route: str
    rate_per_s: float
    burst: int
    scope: str

    def matches_prefix(self, path: str) -> bool:
        return self.route.endswith("*") and path.startswith(self.route[:-1])

    def as_json(self) -> dict[str, Any]:
        return {
            "rule": self.name,
            "route": self.route,
            "rate_per_s": self.rate_per_s,
            "burst": self.burst,
            "scope": self.scope,
        }


@dataclass(frozen=True)
class Verdict:
    """One bucket's answer."""

    rule: Rule
    allowed: bool
    remaining: int
    reset_s: float
    retry_after_s: float


@dataclass(frozen=True)
class Decision:
    """The answer for a request: its most constrained bucket decides the headers."""

    allowed: bool
    verdict: Verdict
    source: str

    def headers(self) -> dict[str, str]:
        v = self.verdict
        return {
            "RateLimit-Limit": str(v.rule.burst),
            "RateLimit-Remaining": str(max(0, v.remaining)),
            "RateLimit-Reset": str(math.ceil(v.reset_s)),
        }


class RateLimited(ApiError):
    status = 429
    code = "rate_limited"

    def __init__(self, decision: Decision) -> None:
        retry = max(1, math.ceil(decision.verdict.retry_after_s))
        super().__init__(
            "Too many requests; slow down.",
            headers={**decision.headers(), "Retry-After": str(retry)},
            rule=decision.verdict.rule.name,
            retry_after_s=retry,
        )


class LimiterUnavailable(ApiError):
    status = 503
    code = "rate_limiter_unavailable"

    def __init__(self) -> None:
        super().__init__(
            "The rate limiter cannot reach its store; try again shortly.",
            headers={"Retry-After": "1"},
        )


def decide(verdicts: Sequence[Verdict], source: str) -> Decision:
    """Allowed only if every bucket allowed; report the most constrained bucket."""
    if len(verdicts) == 1:
        return Decision(verdicts[0].allowed, verdicts[0], source)
    refused = [v for v in verdicts if not v.allowed]
    if refused:
        return Decision(False, max(refused, key=lambda v: v.retry_after_s), source)
    return Decision(True, min(verdicts, key=lambda v: v.remaining / v.rule.burst), source)


class LocalBuckets:
    """The same token buckets in process memory, for while Redis is unavailable."""

    def __init__(self, capacity: int = MAX_LOCAL_BUCKETS) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, keys: Sequence[str], rules: Sequence[Rule]) -> list[Verdict]:
        now = time.monotonic()
        with self._lock:
            levels = [self._level(key, rule, now) for key, rule in zip(keys, rules, strict=True)]
            allowed = all(level >= 1 for level in levels)
            verdicts = []
            for key, rule, level in zip(keys, rules, levels, strict=True):
                tokens = level - 1 if allowed else level
                self._store(key, tokens, now)
                verdicts.append(_verdict(rule, allowed, tokens))
            return verdicts

    def _level(self, key: str, rule: Rule, now: float) -> float:
        tokens, ts = self._buckets.get(key, (float(rule.burst), now))
        return min(rule.burst, tokens + max(0.0, now - ts) * rule.rate_per_s)

    def _store(self, key: str, tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.capacity:
            self._buckets.popitem(last=False)


def lease_size(rule: Rule) -> int:
    """Tokens to take at once for `rule`: 50 ms of its rate, at most 5 % of its burst."""
    return max(1, min(int(rule.rate_per_s * LEASE_S), int(rule.burst * LEASE_SHARE)))


@dataclass
class Lease:
    """Tokens this process took from a bucket and has not spent yet."""

    tokens: int
    expires: float
    verdict: Verdict  # the bucket as Redis left it when the tokens were taken


class Leases:
    """This process's unspent tokens per bucket. One thread at a time renews a bucket's
    lease; the others meanwhile take single tokens, so a busy moment never makes every
    thread take a lease at once and drain the bucket between them."""

    def __init__(self, capacity: int = MAX_LOCAL_BUCKETS) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._leases: dict[tuple[str, Rule], Lease] = {}
        self._renewing: set[tuple[str, Rule]] = set()

    def spend(self, keys: Sequence[str], rules: Sequence[Rule]) -> list[Verdict] | None:
        """One token from this process's lease of every bucket, or None (ask Redis)."""
        now = time.monotonic()
        with self._lock:
            leases = [self._leases.get((key, rule)) for key, rule in zip(keys, rules, strict=True)]
            if not all(lease and lease.tokens >= 1 and lease.expires > now for lease in leases):
                return None
            verdicts = []
            for lease in leases:
                assert lease is not None
                lease.tokens -= 1
                v = lease.verdict
                verdicts.append(
                    Verdict(v.rule, True, v.remaining + lease.tokens, v.reset_s, v.retry_after_s)
                )
            return verdicts

    def wanted(self, keys: Sequence[str], rules: Sequence[Rule]) -> list[int]:
        """Tokens to ask each bucket for: a lease, unless another thread is renewing it."""
        with self._lock:
            sizes = []
            for key, rule in zip(keys, rules, strict=True):
                size = lease_size(rule)
                if size > 1 and (key, rule) not in self._renewing:
                    self._renewing.add((key, rule))
                    sizes.append(size)
                else:
                    sizes.append(1)
            return sizes

    def keep(
        self,
        keys: Sequence[str],
        rules: Sequence[Rule],
        wanted: Sequence[int],
        taken: Sequence[tuple[Verdict, int]] | None,
    ) -> None:
        """End the renewals this thread began and keep, per bucket, what was taken beyond
        this request's own token (`taken`: (verdict, tokens taken); None if Redis failed)."""
        expires = time.monotonic() + LEASE_TTL_S
        with self._lock:
            for key, rule, want in zip(keys, rules, wanted, strict=True):
                if want > 1:
                    self._renewing.discard((key, rule))
            if taken is None:
                return
            if len(self._leases) >= self.capacity:
                self._leases.clear()
            for key, (verdict, count) in zip(keys, taken, strict=True):
                if count > 1:
                    self._add(key, verdict, count - 1, expires)

    def _add(self, key: str, verdict: Verdict, tokens: int, expires: float) -> None:
        lease = self._leases.get((key, verdict.rule))
        if lease is not None and lease.expires > time.monotonic():
            lease.tokens += tokens
            lease.expires, lease.verdict = expires, verdict
        else:
            self._leases[(key, verdict.rule)] = Lease(tokens, expires, verdict)


def _from_script(raw: list[int], rules: Sequence[Rule]) -> tuple[list[Verdict], list[int]]:
    """Verdicts and tokens taken from the script's reply: allowed, then (tokens, ms to full,
    ms to one, taken) per bucket."""
    allowed = bool(raw[0])
    verdicts = [
        Verdict(rule, allowed, raw[1 + 4 * i], raw[2 + 4 * i] / 1000, raw[3 + 4 * i] / 1000)
        for i, rule in enumerate(rules)
    ]
    return verdicts, [raw[4 + 4 * i] for i in range(len(rules))]


def _verdict(rule: Rule, allowed: bool, tokens: float) -> Verdict:
    return Verdict(
        rule,
        allowed,
        math.floor(tokens),
        (rule.burst - tokens) / rule.rate_per_s,
        max(0.0, 1 - tokens) / rule.rate_per_s,
    )


class RateLimiter:
    """Decides whether a request may pass the rules that match it."""

    def __init__(self, guard: RedisGuard, namespace: str, failure_mode: str) -> None:
        if failure_mode not in FAILURE_MODES:
            raise ValueError(f"rate limit failure mode must be one of {FAILURE_MODES}")
        self.guard = guard
        self.namespace = namespace
        self.failure_mode = failure_mode
        self.local = LocalBuckets()
        self.leases = Leases()
        self._counters: dict[tuple[str, bool, str], Any] = {}
        self._script = guard.client.register_script(TOKEN_BUCKET_LUA)

    def check(
        self, rules: Sequence[Rule], client: str, read_along: Sequence[str] = ()
    ) -> tuple[Decision, list[bytes | None] | None]:
        """Take a token for `client` from every rule's bucket (raises when Redis is down and
        the policy is closed). The values of `read_along` keys come back from the same
        script (None when Redis was not reached), so a cached read costs one trip, not two."""
        keys = [self._key(rule, client) for rule in rules]
        values = None
        leased = self.leases.spend(keys, rules)
        try:
            if leased is not None:
                decision = decide(leased, "lease")
            else:
                verdicts, values = self._take_in_redis(keys, rules, read_along)
                decision = decide(verdicts, "redis")
        except RedisUnavailable:
            if self.failure_mode == "closed":
                metrics.RATELIMIT.labels(rules[0].name, "refused", "none").inc()
                raise LimiterUnavailable() from None
            decision = decide(self.local.take(keys, rules), "local")
        self._count(decision.verdict.rule.name, decision.allowed, decision.source)
        return decision, values

    def _count(self, rule: str, allowed: bool, source: str) -> None:
        key = (rule, allowed, source)
        counter = self._counters.get(key)
        if counter is None:
            outcome = "allowed" if allowed else "limited"
            counter = self._counters[key] = metrics.RATELIMIT.labels(rule, outcome, source)
        counter.inc()

    def _take_in_redis(
        self, keys: list[str], rules: Sequence[Rule], read_along: Sequence[str]
    ) -> tuple[list[Verdict], list[bytes | None] | None]:
        wanted = self.leases.wanted(keys, rules)
        args: list[float] = [len(keys)]
        for rule, want in zip(rules, wanted, strict=True):
            args += [rule.rate_per_s, rule.burst, want]
        taken: list[tuple[Verdict, int]] | None = None
        try:
            raw = self.guard.run(
                lambda r: self._script(keys=[*keys, *read_along], args=args, client=r)
            )
            verdicts, counts = _from_script(raw, rules)
            taken = list(zip(verdicts, counts, strict=True))
        finally:
            self.leases.keep(keys, rules, wanted, taken)
        values = [v or None for v in raw[1 + 4 * len(rules) :]]
        held = [replace(v, remaining=v.remaining + max(0, n - 1)) for v, n in taken]
        return held, (values if read_along else None)

    def _key(self, rule: Rule, client: str) -> str:
        who = "*" if rule.scope == "global" else client
        return f"{self.namespace}:rl:{rule.name}:{who}"
