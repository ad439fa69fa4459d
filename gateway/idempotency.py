"""Idempotency keys on POST /api/orders: a retried request never places a second order.

Each key is a row of the gateway's own database (`idempotency_keys`, the key its primary
key), so it replays its first answer across restarts of any component or server, Redis
included. A record holds the body's SHA-256, the order id the gateway assigned to the
key, the claim of the request executing it now (if any), and its final answer.

- The first request claims the key: the row is inserted, durably, before the order is
  forwarded, with a fresh order id that the order service places the order under.
- A final answer (any status below 500: 201, 202, 409, a 4xx) is stored; the same key
  with the same body replays it (same status, body and Location, with
  `Idempotent-Replayed: true`). The same key with another body is 422
  `idempotency_key_reused`.
- No 5xx is ever stored. When the order service could not be reached, failed, or its
  outcome is unknown, the claim is released and the row keeps its order id: a retry with
  the key forwards that same order id again, and the order service, idempotent on it,
  answers that order's state instead of placing a second one.
- A duplicate arriving while the key is claimed waits for it (polling, up to `wait_s`)
  and replays its answer; past that it gets 409 `idempotency_in_progress` with
  `Retry-After`. So concurrent requests with one key execute once. A claim lapses after
  `claim_s` (its gateway died mid-request); a retry then takes it over, same order id.
- The gateway database down: requests with a key get 503 `idempotency_unavailable`
  (duplicates could not be ruled out); requests without a key are not affected.

Records are never expired here; removing old ones is retention's job (`created_at`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import TextClause, text

from gateway import metrics
from paxkit.db import UNAVAILABLE, Database
from paxkit.errors import ApiError, InvalidInput

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 128

# Insert the key's record, or take over its claim while it has no answer, nobody holds it
# and the body matches; no row returned means someone else has it (or another body).
_CLAIM = text(
    "INSERT INTO idempotency_keys AS k (key, body_hash, order_id, owner, claimed_until) "
    "VALUES (:key, :hash, :order_id, :owner, now() + make_interval(secs => :claim_s)) "
    "ON CONFLICT (key) DO UPDATE SET owner = EXCLUDED.owner, "
    "claimed_until = EXCLUDED.claimed_until, updated_at = now() "
    "WHERE k.status IS NULL AND k.body_hash = EXCLUDED.body_hash "
    "AND (k.owner IS NULL OR k.claimed_until < now()) RETURNING k.order_id"
)
_READ = text("SELECT body_hash, status, body, location FROM idempotency_keys WHERE key = :key")
_ANSWER = text(
    "UPDATE idempotency_keys SET status = :status, body = :body, "
    "location = :location, owner = NULL, claimed_until = NULL, updated_at = now() "
    "WHERE key = :key AND owner = :owner AND status IS NULL"
)
_RELEASE = text(
    "UPDATE idempotency_keys SET owner = NULL, claimed_until = NULL, updated_at = now() "
    "WHERE key = :key AND owner = :owner"
)


@dataclass(frozen=True)
class Claim:
    """This request owns the key and must settle it; it places the order `order_id`."""

    key: str
    token: str
    order_id: str


@dataclass(frozen=True)
class Stored:
    """A first final answer, to replay."""

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


def is_final(status: int) -> bool:
    """An answer a retry may replay: anything but a 5xx."""
    return status < 500


class Idempotency:
    def __init__(self, db: Database, claim_s: float, wait_s: float, poll_s: float = 0.05) -> None:
        self.db = db
        self.claim_s = claim_s
        self.wait_s = wait_s
        self.poll_s = poll_s

    def begin(self, key: str, body: dict[str, Any], order_id: str) -> Claim | Stored:
        """Claim the key (placing `order_id`, or the order id the key already has), or the
        first answer to replay, waiting while another request holds the key."""
        token, digest = secrets.token_hex(8), body_digest(body)
        deadline = time.monotonic() + self.wait_s
        while True:
            claimed = self._run(
                _CLAIM,
                key=key,
                hash=digest,
                order_id=order_id,
                owner=token,
                claim_s=self.claim_s,
            )
            if claimed is not None:
                metrics.IDEMPOTENCY.labels("new").inc()
                return Claim(key, token, str(claimed.order_id))
            stored = self._replayable(key, digest)
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

    def settle(self, claim: Claim, answer: Stored | None) -> None:
        """Keep a final answer for replays; anything else (no answer, a 5xx) only releases
        the claim, so a retry forwards the same order id again."""
        try:
            if answer is not None and is_final(answer.status):
                self._write(
                    _ANSWER,
                    key=claim.key,
                    owner=claim.token,
                    status=answer.status,
                    body=json.dumps(answer.body),
                    location=answer.location,
                )
            else:
                self._write(_RELEASE, key=claim.key, owner=claim.token)
        except UNAVAILABLE as err:  # the claim lapses after claim_s; a retry takes it
            log.error("idempotency key %r not settled: %s", claim.key, err)

    def _replayable(self, key: str, digest: str) -> Stored | None:
        record = self._run(_READ, key=key)
        if record is None:  # removed since the claim failed: claim it again
            return None
        if record.body_hash != digest:
            metrics.IDEMPOTENCY.labels("mismatch").inc()
            raise ApiError(
                "This Idempotency-Key was used with a different request body.",
                code="idempotency_key_reused",
                status=422,
            )
        if record.status is None:
            return None
        return Stored(record.status, json.loads(record.body), record.location)

    def _run(self, sql: TextClause, **params: Any) -> Any:
        """One statement on its own; its first row, or 503 when the database can't answer."""
        try:
            with self.db.autocommit() as conn:
                return conn.execute(sql, params).first()
        except UNAVAILABLE as err:
            metrics.IDEMPOTENCY.labels("unavailable").inc()
            log.warning("idempotency keys unavailable: %s", err)
            raise ApiError(
                "Idempotency keys cannot be checked right now; try again shortly.",
                code="idempotency_unavailable",
                status=503,
                headers={"Retry-After": "1"},
            ) from err

    def _write(self, sql: TextClause, **params: Any) -> None:
        with self.db.autocommit() as conn:
            conn.execute(sql, params)
