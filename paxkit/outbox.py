"""The transactional outbox and its relay.

`enqueue()` writes an event in the caller's local transaction, so the event exists exactly
when the business change committed. The relay claims unsent rows with
`FOR UPDATE SKIP LOCKED` (several relays never publish the same row at once, and a row
committed late is still found: there is no `id > last` cursor), publishes them persistent
in one AMQP transaction per batch (durable at its commit), then marks them sent. A crash
between publish and mark publishes again: consumers dedupe by message id (the inbox).
"""

from __future__ import annotations

import json
import logging
import select
import threading
from collections.abc import Callable
from typing import Any

import psycopg2
from sqlalchemy import Connection

from paxkit.backoff import reconnect_backoff
from paxkit.db import run
from paxkit.faults import Faults
from paxkit.messaging import Message, Outgoing, Publisher, Topology
from paxkit.tracing import traceparent

log = logging.getLogger(__name__)

CHANNEL = "paxmart_outbox"
BATCH = 200
IDLE_WAIT_S = 1.0


def enqueue(conn: Connection, routing_key: str, payload: dict[str, Any]) -> None:
    """Add an event to the outbox inside the caller's transaction; wakes the relay at commit."""
    enqueue_all(conn, [Message(routing_key, payload)])


def enqueue_all(conn: Connection, messages: list[Message]) -> None:
    """Add several events to the outbox inside the caller's transaction, in one statement
    that also queues the relay's wake-up (delivered at commit)."""
    run(
        conn,
        "INSERT INTO outbox (routing_key, payload, traceparent) "
        "SELECT key, CAST(payload AS jsonb), :trace "
        "FROM unnest(CAST(:keys AS text[]), CAST(:payloads AS text[])) AS m (key, payload), "
        "(SELECT pg_notify(:channel, '')) AS woken",
        {
            "keys": [m.routing_key for m in messages],
            "payloads": [json.dumps(m.payload) for m in messages],
            "trace": traceparent(),
            "channel": CHANNEL,
        },
    )


def outgoing(message_id: Any, routing_key: str, payload: Any, trace: str | None) -> Outgoing:
    headers = {"traceparent": trace} if trace else None
    return Outgoing(routing_key, payload, str(message_id), headers)


class OutboxRelay:
    """Publishes one database's outbox to RabbitMQ, on its own thread."""

    def __init__(
        self, name: str, db_url: str, amqp_url: str, topology: Topology, faults: Faults
    ) -> None:
        self.name = name
        self.topology = topology
        self.db_url = db_url
        self.amqp_url = amqp_url
        self.faults = faults
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"relay-{name}", daemon=True)

    def start(self) -> OutboxRelay:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        backoff = reconnect_backoff()
        while not self._stop.is_set():
            try:
                self._serve(on_success=backoff.succeeded)
            except Exception as err:  # a relay must outlive any failure: log, back off, retry
                delay = backoff.failed()
                log.warning("outbox relay %s: %s; reconnecting in %.1fs", self.name, err, delay)
                self._stop.wait(delay)

    def _serve(self, on_success: Callable[[], None]) -> None:
        """Drain, then sleep on LISTEN until a commit notifies (or a second passes); every
        drained pass counts as a success (the reconnect backoff starts over)."""
        listener = psycopg2.connect(self.db_url, connect_timeout=5)
        listener.autocommit = True
        worker = psycopg2.connect(self.db_url, connect_timeout=5)
        publisher = Publisher(self.amqp_url, self.topology)
        try:
            with listener.cursor() as cur:
                cur.execute(f"LISTEN {CHANNEL}")
            while not self._stop.is_set():
                while self.relay_batch(worker, publisher) == BATCH:
                    pass
                on_success()
                if select.select([listener], [], [], IDLE_WAIT_S)[0]:
                    listener.poll()
                    listener.notifies.clear()
        finally:
            publisher.close()
            worker.close()
            listener.close()

    def relay_batch(self, conn: Any, publisher: Publisher) -> int:
        """Publish one batch of unsent events and mark them sent; returns how many."""
        with conn, conn.cursor() as cur:
            cur.execute(
                "SELECT id, message_id, routing_key, payload, traceparent FROM outbox "
                "WHERE sent_at IS NULL "
                "ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
                (BATCH,),
            )
            rows = cur.fetchall()
            publisher.publish_all([outgoing(*row[1:]) for row in rows])
            if rows:
                self.faults.hit("relay_after_publish")
                cur.execute(
                    "UPDATE outbox SET sent_at = now() WHERE id = ANY(%s)",
                    ([row[0] for row in rows],),
                )
        return len(rows)
