"""Idempotency keys on POST /api/orders: a retried request never places a second order.

One Redis key per Idempotency-Key holds a JSON record: first `pending` (the body's
SHA-256 and the owner's token, for `pending_s`, longer than the order call may take),
then `done` (the body hash and the first answer: status, body, Location) for 24 h.

- The first request claims the key (SET NX) and is forwarded; its answer is stored.
- The same key with the same body replays that answer (same status, same order_id),
  with `Idempotent-Replayed: true`.
- The same key with a different body is a 422 `idempotency_key_reused`.
- A duplicate arriving while the first is still running waits for it (polling, up to
  `wait_s`) and replays its answer; past that it gets 409 `idempotency_in_progress`
  with `Retry-After`. So two concurrent requests with one key execute once.
- What is stored: every answer of the order service, and a 503/504 when the call
  failed after reaching it (the outcome is unknown: replaying the error is safe, placing
  again is not; the client finds the order under GET /api/users/<id>/orders). The key is
  released, so a retry executes, only when the order certainly never left the gateway:
  an open breaker, or a refused connection.
- Redis down: requests with a key get 503 `idempotency_unavailable` (duplicates could
  not be ruled out); requests without a key are not affected.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

from gateway import metrics
from gateway.redisguard import RedisGuard, RedisUnavailable
from paxkit.errors import ApiError, InvalidInput

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 128

# Overwrite (ARGV[2], for ARGV[3] ms) or delete (no ARGV[2]) the record only while it is
# still the pending record of the request holding token ARGV[1].
_SETTLE_LUA = """
local raw = redis.call('GET', KEYS[1])
if not raw or cjson.decode(raw)['token'] ~= ARGV[1] then return 0 end
if ARGV[2] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
else
  redis.call('DEL', KEYS[1])
end
return 1
"""


@dataclass(frozen=True)
class Claim:
    """This request owns the key and must settle it."""

    key: str
    token: str
    digest: str


@dataclass(frozen=True)
class Stored:
    """A first answer, to replay."""

    status: int
    body: Any
    location: str | None


def validate_key(raw: str | None) -> str | None:
    """The header's value, or None when absent; 400 naming the header when malformed."""
    if raw is None:
        return None
    if not 1 <= len(raw) <= MAX_KEY_LENGTH or not all(" " <= c <= "~" for c in raw):
        raise InvalidInput(
            HEADER, f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable ASCII characters"
        )
    return raw


def body_digest(body: dict[str, Any]) -> str:
    """The same JSON object always hashes the same, whatever its key order or spacing."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class Idempotency:
    def __init__(
        self,
        guard: RedisGuard,
        namespace: str,
        ttl_s: float,
        pending_s: float,
        wait_s: float,
        poll_s: float = 0.05,
    ) -> None:
        self.guard = guard
        self.ns = namespace
        self.ttl_ms = int(ttl_s * 1000)
        self.pending_ms = int(pending_s * 1000)
        self.wait_s = wait_s
        self.poll_s = poll_s
        self._settle = guard.client.register_script(_SETTLE_LUA)

    def begin(self, key: str, body: dict[str, Any]) -> Claim | Stored:
        """Claim the key, or the first answer to replay (waiting while it is pending)."""
        claim = Claim(key, secrets.token_hex(8), body_digest(body))
        pending = json.dumps({"hash": claim.digest, "state": "pending", "token": claim.token})
        deadline = time.monotonic() + self.wait_s
        while True:
            raw = self._redis(
                lambda r: r.set(self._key(key), pending, nx=True, px=self.pending_ms, get=True)
            )
            if raw is None:
                metrics.IDEMPOTENCY.labels("new").inc()
                return claim
            stored = self._replayable(json.loads(raw), claim.digest)
            if stored is not None:
                metrics.IDEMPOTENCY.labels("replay").inc()
                return stored
            if time.monotonic() >= deadline:
                metrics.IDEMPOTENCY.labels("in_progress").inc()
                raise ApiError(
                    "A request with this Idempotency-Key is still being processed.",
                    code="idempotency_in_progress",
                    status=409,
                    headers={"Retry-After": "1"},
                )
            time.sleep(self.poll_s)

    def finish(self, claim: Claim, stored: Stored) -> None:
        """Keep the answer for replays."""
        record = json.dumps(
            {
                "hash": claim.digest,
                "state": "done",
                "status": stored.status,
                "body": stored.body,
                "location": stored.location,
            }
        )
        self._settle_record(claim, record, str(self.ttl_ms))

    def release(self, claim: Claim) -> None:
        """Forget the claim: nothing was executed, so a retry may execute."""
        self._settle_record(claim)

    def _settle_record(self, claim: Claim, *args: str) -> None:
        key = self._key(claim.key)
        try:
            done = self.guard.run(
                lambda r: self._settle(keys=[key], args=[claim.token, *args], client=r)
            )
        except RedisUnavailable:
            log.error("idempotency key %r not settled (Redis down)", claim.key)
            return
        if not done:
            log.error("idempotency key %r expired while its request ran", claim.key)

    def _replayable(self, record: dict[str, Any], digest: str) -> Stored | None:
        if record["hash"] != digest:
            metrics.IDEMPOTENCY.labels("mismatch").inc()
            raise ApiError(
                "This Idempotency-Key was used with a different request body.",
                code="idempotency_key_reused",
                status=422,
            )
        if record["state"] != "done":
            return None
        return Stored(record["status"], record["body"], record["location"])

    def _redis(self, call: Any) -> Any:
        try:
            return self.guard.run(call)
        except RedisUnavailable as err:
            metrics.IDEMPOTENCY.labels("unavailable").inc()
            raise ApiError(
                "Idempotency keys cannot be checked right now; try again shortly.",
                code="idempotency_unavailable",
                status=503,
                headers={"Retry-After": "1"},
            ) from err

    def _key(self, key: str) -> str:
        return f"{self.ns}:idem:{key}"
