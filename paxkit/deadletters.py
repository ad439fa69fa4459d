"""Dead letters: what a consumer can never handle, kept in its own database with the reason.

Each consuming component serves its own (`GET /dead-letters`, `POST /dead-letters/replay`);
an admin component lists and replays everyone's by asking each in turn (`DeadLetterAdmin`),
so no component reads another's database or queues. A replay puts the message back into
the queue it died in, with the same message id: the consumer's inbox makes a double
replay harmless.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from flask import Blueprint, Flask, jsonify, request
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import text

from paxkit.db import Database
from paxkit.errors import ApiError, InvalidInput
from paxkit.http import ServiceClient
from paxkit.requests_json import optional_json_body

log = logging.getLogger(__name__)

MAX_LIST = 500
REPLAY_BATCH = 500
COLUMNS = "id, queue, message_id, routing_key, body, headers, reason, attempts, dead_at"


@dataclass(frozen=True)
class DeadLetter:
    id: str
    queue: str
    message_id: str | None
    routing_key: str
    body: bytes
    headers: dict[str, Any]
    reason: str
    attempts: int
    dead_at: datetime

    def as_json(self, component: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "component": component,
            "queue": self.queue,
            "message_id": self.message_id,
            "routing_key": self.routing_key,
            "body": self.body.decode(errors="replace"),
            "headers": self.headers,
            "reason": self.reason,
            "attempts": self.attempts,
            "dead_at": self.dead_at.isoformat(),
        }


class QueueSender(Protocol):
    """Puts a message straight into a named queue (paxkit.messaging.Publisher)."""

    def send_to_queue(
        self, queue: str, body: bytes, message_id: str | None, headers: dict[str, Any]
    ) -> None: ...

    def close(self) -> None: ...


def _row(row: Mapping[Any, Any]) -> DeadLetter:
    return DeadLetter(
        id=str(row["id"]),
        queue=row["queue"],
        message_id=row["message_id"],
        routing_key=row["routing_key"],
        body=bytes(row["body"]),
        headers=dict(row["headers"]),
        reason=row["reason"],
        attempts=int(row["attempts"]),
        dead_at=row["dead_at"],
    )


class DeadLetters:
    """One component's dead letters."""

    def __init__(self, db: Database, sender: Callable[[], QueueSender]) -> None:
        self.db = db
        self.sender = sender

    def record(
        self,
        queue: str,
        message_id: str | None,
        routing_key: str,
        body: bytes,
        headers: Mapping[str, Any],
        reason: str,
        attempts: int,
    ) -> None:
        """Keep a message that can never be handled; one replayed and dead again takes its
        old row back."""
        with self.db.autocommit() as conn:  # one statement: its own transaction
            conn.execute(
                text(
                    "INSERT INTO dead_letters "
                    "(queue, message_id, routing_key, body, headers, reason, attempts) "
                    "VALUES (:queue, :message_id, :routing_key, :body, CAST(:headers AS jsonb), "
                    ":reason, :attempts) ON CONFLICT (queue, message_id) DO UPDATE SET "
                    "body = EXCLUDED.body, headers = EXCLUDED.headers, "
                    "reason = EXCLUDED.reason, attempts = EXCLUDED.attempts, dead_at = now()"
                ),
                {
                    "queue": queue,
                    "message_id": message_id,
                    "routing_key": routing_key,
                    "body": body,
                    "headers": json.dumps(dict(headers), default=str),
                    "reason": reason[:2000],
                    "attempts": attempts,
                },
            )

    def oldest(self, limit: int) -> list[DeadLetter]:
        rows = self.db.fetch_all(
            f"SELECT {COLUMNS} FROM dead_letters ORDER BY dead_at, id LIMIT :limit", limit=limit
        )
        return [_row(r) for r in rows]

    def count(self) -> int:
        row = self.db.fetch_one("SELECT count(*) AS n FROM dead_letters")
        return int(row["n"]) if row else 0

    def replay(self, ids: list[str] | None) -> list[str]:
        """Put the chosen dead letters (all when `ids` is None, a batch at a time) back into
        their queues; returns the ids replayed. Each leaves the table only once the broker
        confirmed it; a crash in between replays it again, which the inbox dedupes."""
        with self.db.transaction() as conn:
            rows = [
                _row(r._mapping)
                for r in conn.execute(
                    text(
                        f"SELECT {COLUMNS} FROM dead_letters WHERE CAST(:ids AS uuid[]) IS NULL "
                        "OR id = ANY(CAST(:ids AS uuid[])) ORDER BY dead_at, id LIMIT :limit "
                        "FOR UPDATE SKIP LOCKED"
                    ),
                    {"ids": ids, "limit": REPLAY_BATCH},
                )
            ]
            if not rows:
                return []
            sender = self.sender()
            try:
                for letter in rows:  # its retry counts were not kept: they start over
                    headers = {**letter.headers, "x-routing-key": letter.routing_key}
                    sender.send_to_queue(letter.queue, letter.body, letter.message_id, headers)
            finally:
                sender.close()
            replayed = [letter.id for letter in rows]
            conn.execute(
                text("DELETE FROM dead_letters WHERE id = ANY(CAST(:ids AS uuid[]))"),
                {"ids": replayed},
            )
        log.warning("replayed %d dead letters", len(replayed))
        return replayed


def parse_limit(raw: str | None, default: int = 100) -> int:
    limit = raw or str(default)
    if not limit.isdigit() or not 1 <= int(limit) <= MAX_LIST:
        raise InvalidInput("limit", f"limit must be an integer from 1 to {MAX_LIST}")
    return int(limit)


def parse_replay(body: dict[str, Any]) -> list[str] | None:
    """The ids a replay asks for: None (every dead letter) or a list of ids."""
    if "ids" not in body or body["ids"] is None:
        return None
    ids = body["ids"]
    if not isinstance(ids, list) or not 1 <= len(ids) <= REPLAY_BATCH:
        raise InvalidInput("ids", f"ids must be a list of 1 to {REPLAY_BATCH} dead-letter ids")
    for item in ids:
        try:
            uuid.UUID(item if isinstance(item, str) else "")
        except ValueError:
            raise InvalidInput("ids", f"{item!r} is not a dead-letter id") from None
    return list(dict.fromkeys(str(i) for i in ids))


def dead_letters_blueprint(component: str, store: DeadLetters) -> Blueprint:
    """A component's own dead letters, for the admin component to ask for."""
    bp = Blueprint("dead_letters", __name__)

    @bp.get("/dead-letters")
    def list_dead_letters() -> Any:
        limit = parse_limit(request.args.get("limit"))
        items = [letter.as_json(component) for letter in store.oldest(limit)]
        return jsonify({"component": component, "items": items, "total": store.count()})

    @bp.post("/dead-letters/replay")
    def replay_dead_letters() -> Any:
        replayed = store.replay(parse_replay(optional_json_body()))
        return jsonify({"component": component, "replayed": replayed, "left": store.count()})

    return bp


class DeadLetterAdmin:
    """Everyone's dead letters: this component's own, and each other consumer's, asked over
    HTTP. A component that does not answer is named in `unavailable`."""

    def __init__(
        self, component: str, own: DeadLetters, others: Mapping[str, ServiceClient]
    ) -> None:
        self.component = component
        self.own = own
        self.others = dict(others)

    def listing(self, limit: int) -> dict[str, Any]:
        items = [letter.as_json(self.component) for letter in self.own.oldest(limit)]
        total, unavailable = self.own.count(), []
        for name, client in self.others.items():
            answer = self._ask(client, "GET", "/dead-letters", params={"limit": limit})
            if answer is None:
                unavailable.append(name)
                continue
            items += answer["items"]
            total += int(answer["total"])
        items.sort(key=lambda item: item["dead_at"])
        return {"items": items[:limit], "total": total, "unavailable": unavailable}

    def replay(self, ids: list[str] | None) -> dict[str, Any]:
        replayed = self.own.replay(ids)
        left, unavailable = self.own.count(), []
        for name, client in self.others.items():
            answer = self._ask(client, "POST", "/dead-letters/replay", json={"ids": ids})
            if answer is None:
                unavailable.append(name)
                continue
            replayed += answer["replayed"]
            left += int(answer["left"])
        result: dict[str, Any] = {"replayed": replayed, "left": left, "unavailable": unavailable}
        if ids is not None:
            result["not_found"] = [i for i in ids if i not in set(replayed)]
        return result

    @staticmethod
    def _ask(client: ServiceClient, method: str, path: str, **kwargs: Any) -> Any:
        try:
            reply = client.call(method, path, idempotent=method == "GET", **kwargs)
        except ApiError as err:
            log.warning("%s did not answer %s: %s", client.name, path, err.message)
            return None
        if not reply.ok:
            log.warning("%s answered %s with %s", client.name, path, reply.status)
            return None
        return reply.body


def admin_blueprint(admin: DeadLetterAdmin) -> Blueprint:
    """`GET /admin/dead-letters` and `POST /admin/dead-letters/replay` over every consumer."""
    bp = Blueprint("dead_letter_admin", __name__)

    @bp.get("/admin/dead-letters")
    def list_all() -> Any:
        return jsonify(admin.listing(parse_limit(request.args.get("limit"))))

    @bp.post("/admin/dead-letters/replay")
    def replay_all() -> Any:
        return jsonify(admin.replay(parse_replay(optional_json_body())))

    return bp


def dead_letters_probe(component: str, store: DeadLetters) -> Callable[[], list[Metric]]:
    """Dead letters waiting for an operator."""

    def probe() -> list[Metric]:
        gauge = GaugeMetricFamily(
            "paxmart_dead_letters", "Messages that can never be handled", labels=["component"]
        )
        gauge.add_metric([component], float(store.count()))
        return [gauge]

    return probe


def serve_dead_letters(app: Flask, component: str, store: DeadLetters) -> None:
    """Register a component's dead-letter routes and gauge."""
    app.register_blueprint(dead_letters_blueprint(component, store))
    app.extensions.setdefault("paxmart.gauges", []).append(dead_letters_probe(component, store))
