"""A reliable message consumer: inbox dedupe, ack after commit, retries, dead letters.

Work runs on a small pool of threads, never on the connection's I/O thread, so heartbeats
are never starved; acks and retries are handed back to the I/O thread with
`add_callback_threadsafe` (pika's connections are not thread-safe). A handler runs in one
local transaction with the message's inbox row: a redelivered message (consumer killed
after its commit, before its ack) finds the row and is only acked.

A failure is classified (`classify`): a transient one (a database, broker or network
error) goes to a delay queue and comes back, for as long as it takes, the delays growing
up to the last tier; a message that can never be handled (`PoisonMessage`: undecodable,
invalid) is recorded in the component's own dead letters (paxkit/deadletters.py) and
acked; any other error is retried until it has failed `max_attempts` times (transient
failures do not count) before it is dead-lettered too.

On quorum queues (paxkit/messaging.py) the broker has a last word: a message delivered
past the queue's delivery limit without an ack (one that kills its consumer every time)
is dead-lettered by the broker into the queue's dead queue; the consumer drains that one
into the same dead letters, so every dead message is listed and replayed in one place.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pika
import psycopg2
from pika.adapters.blocking_connection import BlockingChannel
from sqlalchemy import Connection
from sqlalchemy import exc as sa_exc

from paxkit.backoff import reconnect_backoff
from paxkit.db import Database, run
from paxkit.deadletters import DeadLetters
from paxkit.errors import ApiError
from paxkit.faults import Faults
from paxkit.messaging import (
    PoisonMessage,
    PublishFailed,
    QueueSpec,
    Topology,
    connect,
    declare_queue,
    properties,
)
from paxkit.tracing import parse, trace

log = logging.getLogger(__name__)

Handler = Callable[[Connection, dict[str, Any], str], None]  # (conn, payload, routing key)
# Headers a retried message carries: its attempts (which pick the delay) and how many of
# them failed unexpectedly (which may end in the dead letters).
ATTEMPTS = "x-attempts"
UNEXPECTED = "x-unexpected-failures"
COUNTS = (ATTEMPTS, UNEXPECTED)
# What the broker adds to a message it dead-letters: not kept with the dead letter (the
# reason says it), and not JSON (timestamps).
BROKER_HEADERS = ("x-death", "x-first-death-", "x-last-death-", "x-delivery-count")


class Failure(enum.Enum):
    POISON = "poison"  # can never succeed: dead-lettered at once
    TRANSIENT = "transient"  # a server or the network is away: retried as long as it takes
    UNEXPECTED = "unexpected"  # anything else: retried a few times, then dead-lettered


TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError,  # connection refused or lost, timeouts, lock waits, deadlocks
    sa_exc.InterfaceError,  # a connection closed under us
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,  # no connection free in the pool in time
    psycopg2.OperationalError,
    psycopg2.InterfaceError,
    pika.exceptions.AMQPError,
    PublishFailed,
    OSError,  # sockets: refused, reset, timed out
)


def classify(error: BaseException) -> Failure:
    """What kind of failure a handler's error is."""
    if isinstance(error, PoisonMessage):
        return Failure.POISON
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return Failure.TRANSIENT
    if isinstance(error, TRANSIENT_ERRORS):
        return Failure.TRANSIENT
    if isinstance(error, ApiError) and error.status >= 500:  # an upstream is unavailable
        return Failure.TRANSIENT
    return Failure.UNEXPECTED


def dead_letter_reason(error: BaseException, unexpected: int, max_attempts: int) -> str | None:
    """Why a failed message goes to the dead letters, or None: it is retried. `unexpected`
    counts its unexpected failures, this one included (transient ones never count)."""
    kind = classify(error)
    if kind is Failure.POISON:
        return f"poison: {error}"
    if kind is Failure.UNEXPECTED and unexpected >= max_attempts:
        return f"failed {unexpected} times: {error!r}"
    return None


def claim_in_inbox(conn: Connection, message_id: str, consumer: str) -> bool:
    """True the first time this consumer sees the message (in the handler's transaction)."""
    return (
        run(
            conn,
            "INSERT INTO inbox (message_id, consumer) VALUES (CAST(:id AS uuid), :consumer) "
            "ON CONFLICT DO NOTHING RETURNING message_id",
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
        dead_letters: DeadLetters,
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
        self.dead_letters = dead_letters
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
        backoff = reconnect_backoff()
        while not self._stop.is_set():
            try:
                self._consume(on_connected=backoff.succeeded)
            except Exception as err:  # a consumer must outlive any failure: back off, retry
                delay = backoff.failed()
                log.warning(
                    "consumer %s lost the broker (%r); reconnecting in %.1fs", self.name, err, delay
                )
                self._stop.wait(delay)

    def _consume(self, on_connected: Callable[[], None]) -> None:
        connection = connect(self.amqp_url)
        self._connection = connection
        channel = connection.channel()
        self.topology.declare(channel)
        declare_queue(channel, self.spec, self.topology.exchange, self.topology.kind)
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
        if self.topology.kind.quorum:

            def on_dead(ch: BlockingChannel, method: Any, props: Any, body: bytes) -> None:
                self.pool.submit(self._bury, connection, ch, method.delivery_tag, props, body)

            channel.basic_consume(self.spec.dead_queue, on_dead)
        on_connected()
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
        headers = dict(props.headers or {})
        attempts = int(headers.get(ATTEMPTS, 0)) + 1
        props.headers = {**headers, "x-routing-key": routing_key}
        try:
            self._handle(props.message_id, body, routing_key, props.headers.get("traceparent"))
        except Exception as failure:
            kind = classify(failure)
            unexpected = int(headers.get(UNEXPECTED, 0)) + (kind is Failure.UNEXPECTED)
            reason = dead_letter_reason(failure, unexpected, self.max_attempts)
            if reason is not None and self._dead(props, body, routing_key, reason, attempts):
                self._later(connection, lambda: channel.basic_ack(tag))
                return
            log.warning(
                "consumer %s: message %s failed (attempt %d, %s): %r",
                self.name,
                props.message_id,
                attempts,
                kind.value,
                failure,
            )
            counts = {ATTEMPTS: attempts, UNEXPECTED: unexpected}
            self._later(
                connection, lambda: self._retry(channel, publisher, tag, props, body, counts)
            )
            return
        try:
            self.faults.hit("consumer_after_commit")
        except Exception as err:  # anything between commit and ack: deliver it again
            # Committed, not acked: the broker delivers it again and the inbox knows it. A
            # message is never left unacked, which stalls the consumer once its prefetch
            # window is full.
            log.warning("consumer %s: %s committed, not acked (%r)", self.name, tag, err)
            self._later(connection, lambda: channel.basic_nack(tag, requeue=True))
            return
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
        counts: dict[str, int],
    ) -> None:
        headers = {**(props.headers or {}), **counts}
        queue = self.spec.retry_delay_queue(counts[ATTEMPTS])
        publisher.basic_publish("", queue, body, properties(props.message_id, headers))
        channel.basic_ack(tag)

    def _bury(
        self,
        connection: pika.BlockingConnection,
        channel: BlockingChannel,
        tag: int,
        props: Any,
        body: bytes,
    ) -> None:
        """A message the broker dead-lettered past the delivery limit: into the dead letters
        (acked once recorded; left in the dead queue while the database refuses it)."""
        headers = dict(props.headers or {})
        deaths = headers.get("x-death") or [{}]
        keys = deaths[0].get("routing-keys") or [""]
        routing_key = str(headers.get("x-routing-key") or keys[0])
        delivered = int(deaths[0].get("count", 0)) or self.topology.kind.delivery_limit
        reason = (
            f"delivery limit {self.topology.kind.delivery_limit} exceeded: delivered "
            "without an ack that often (its consumer died or requeued it each time)"
        )
        props.headers = {k: v for k, v in headers.items() if not k.startswith(BROKER_HEADERS)}
        if self._dead(props, body, routing_key, reason, delivered):
            self._later(connection, lambda: channel.basic_ack(tag))
        else:
            self._later(connection, lambda: channel.basic_nack(tag, requeue=True))

    def _dead(self, props: Any, body: bytes, routing_key: str, reason: str, attempts: int) -> bool:
        """Record the message in the dead letters; False if that failed (it is retried)."""
        headers = {k: v for k, v in (props.headers or {}).items() if k not in COUNTS}
        try:
            self.dead_letters.record(
                self.spec.name, props.message_id, routing_key, body, headers, reason, attempts
            )
        except Exception as err:
            log.warning("consumer %s: cannot record a dead letter yet: %r", self.name, err)
            return False
        log.error("consumer %s: message %s dead-lettered: %s", self.name, props.message_id, reason)
        return True
