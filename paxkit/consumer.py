"""A reliable message consumer: inbox dedupe, ack after commit, bounded retries, dead letters.

Work runs on a small pool of threads, never on the connection's I/O thread, so heartbeats
are never starved; acks, retries and dead-lettering are handed back to the I/O thread with
`add_callback_threadsafe` (pika's connections are not thread-safe). A handler runs in one
local transaction with the message's inbox row: a redelivered message (consumer killed
after its commit, before its ack) finds the row and is only acked. Transient failures go
to a delay queue and come back; after `max_attempts`, or if the message is malformed
(`PoisonMessage`), it goes to the dead-letter queue with the reason.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel
from sqlalchemy import Connection, text

from paxkit.db import Database
from paxkit.faults import Faults
from paxkit.messaging import RETRY_TIERS_MS, QueueSpec, Topology, connect, properties
from paxkit.tracing import parse, trace

log = logging.getLogger(__name__)

Handler = Callable[[Connection, dict[str, Any], str], None]  # (conn, payload, routing key)
RECONNECT_CAP_S = 10.0


class PoisonMessage(Exception):
    """A message that can never be handled; it goes straight to the dead-letter queue."""


def claim_in_inbox(conn: Connection, message_id: str, consumer: str) -> bool:
    """True the first time this consumer sees the message (in the handler's transaction)."""
    return (
        conn.execute(
            text(
                "INSERT INTO inbox (message_id, consumer) VALUES (CAST(:id AS uuid), :consumer) "
                "ON CONFLICT DO NOTHING RETURNING message_id"
            ),
            {"id": message_id, "consumer": consumer},
        ).scalar()
        is not None
    )


class Consumer:
    def __init__(
        self,
        name: str,
        spec: QueueSpec,
        handler: Handler,
        db: Database,
        amqp_url: str,
        topology: Topology,
        faults: Faults,
        prefetch: int = 16,
        workers: int = 4,
        max_attempts: int = 5,
    ) -> None:
        self.name = name
        self.topology = topology
        self.spec = topology.queue(spec)
        self.handler = handler
        self.db = db
        self.amqp_url = amqp_url
        self.faults = faults
        self.prefetch = prefetch
        self.max_attempts = max_attempts
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"consume-{name}")
        self._stop = threading.Event()
        self._connection: pika.BlockingConnection | None = None
        self._thread = threading.Thread(target=self._run, name=f"consumer-{name}", daemon=True)

    def start(self) -> Consumer:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        connection = self._connection
        if connection is not None and connection.is_open:
            with contextlib.suppress(pika.exceptions.AMQPError):
                connection.add_callback_threadsafe(connection.close)
        self._thread.join(timeout_s)

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self._consume()
                failures = 0
            except Exception as err:  # a consumer must outlive any failure: back off, retry
                failures += 1
                delay = min(RECONNECT_CAP_S, 0.2 * 2 ** min(failures, 6)) * random.uniform(0.5, 1)
                log.warning(
                    "consumer %s lost the broker (%r); reconnecting in %.1fs", self.name, err, delay
                )
                self._stop.wait(delay)

    def _consume(self) -> None:
        connection = connect(self.amqp_url)
        self._connection = connection
        channel = connection.channel()
        self.topology.declare(channel)
        publisher = connection.channel()
        publisher.confirm_delivery()
        channel.basic_qos(prefetch_count=self.prefetch)

        def on_message(ch: BlockingChannel, method: Any, props: Any, body: bytes) -> None:
            # A retried message comes back through the default exchange: its original
            # routing key travels in a header.
            key = (props.headers or {}).get("x-routing-key") or method.routing_key
            self.pool.submit(
                self._process, connection, ch, publisher, method.delivery_tag, props, body, key
            )

        channel.basic_consume(self.spec.name, on_message)
        try:
            channel.start_consuming()
        finally:
            if connection.is_open:
                connection.close()

    def _process(
        self,
        connection: pika.BlockingConnection,
        channel: BlockingChannel,
        publisher: BlockingChannel,
        tag: int,
        props: Any,
        body: bytes,
        routing_key: str,
    ) -> None:
        attempts = int(dict(props.headers or {}).get("x-attempts", 0)) + 1
        props.headers = {**(props.headers or {}), "x-routing-key": routing_key}
        try:
            self._handle(props.message_id, body, routing_key, props.headers.get("traceparent"))
        except PoisonMessage as poison:
            reason = str(poison)
            self._later(
                connection,
                lambda: self._dead(channel, publisher, tag, props, body, reason, attempts),
            )
            return
        except Exception as failure:
            reason = repr(failure)
            log.warning(
                "consumer %s: message %s failed (attempt %d): %s",
                self.name,
                props.message_id,
                attempts,
                reason,
            )
            if attempts >= self.max_attempts:
                self._later(
                    connection,
                    lambda: self._dead(channel, publisher, tag, props, body, reason, attempts),
                )
            else:
                self._later(
                    connection, lambda: self._retry(channel, publisher, tag, props, body, attempts)
                )
            return
        self.faults.hit("consumer_after_commit")
        self._later(connection, lambda: channel.basic_ack(tag))

    def _handle(
        self, message_id: str | None, body: bytes, routing_key: str, trace_header: str | None = None
    ) -> None:
        try:
            uuid.UUID(str(message_id))
        except ValueError as err:
            raise PoisonMessage(f"message_id {message_id!r} is not a UUID") from err
        try:
            payload = json.loads(body)
        except ValueError as err:
            raise PoisonMessage(f"body is not JSON: {err}") from err
        if not isinstance(payload, dict):
            raise PoisonMessage("body is not a JSON object")
        with trace(parse(trace_header)), self.db.transaction() as conn:
            if claim_in_inbox(conn, str(message_id), self.name):
                self.handler(conn, payload, routing_key)
                log.info("handled %s %s", routing_key, message_id)
            else:
                log.info("duplicate %s %s: already handled", routing_key, message_id)

    @staticmethod
    def _later(connection: pika.BlockingConnection, work: Callable[[], object]) -> None:
        """Run on the connection's thread; if the connection is gone the broker redelivers."""
        try:
            connection.add_callback_threadsafe(work)
        except pika.exceptions.AMQPError as err:
            log.warning("broker connection gone before ack (%r); it will redeliver", err)

    def _retry(
        self,
        channel: BlockingChannel,
        publisher: BlockingChannel,
        tag: int,
        props: Any,
        body: bytes,
        attempts: int,
    ) -> None:
        tier = min(attempts - 1, len(RETRY_TIERS_MS) - 1)
        headers = {**(props.headers or {}), "x-attempts": attempts}
        publisher.basic_publish(
            "", self.spec.retry_queue(tier), body, properties(props.message_id, headers)
        )
        channel.basic_ack(tag)

    def _dead(
        self,
        channel: BlockingChannel,
        publisher: BlockingChannel,
        tag: int,
        props: Any,
        body: bytes,
        reason: str,
        attempts: int,
    ) -> None:
        log.error("consumer %s: message %s dead-lettered: %s", self.name, props.message_id, reason)
        headers = {
            **(props.headers or {}),
            "x-attempts": attempts,
            "x-death-reason": reason[:500],
            "x-original-queue": self.spec.name,
        }
        publisher.basic_publish(
            "", self.spec.dead_queue, body, properties(props.message_id or "none", headers)
        )
        channel.basic_ack(tag)
