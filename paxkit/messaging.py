"""RabbitMQ plumbing: connections, the topology (declared by code, idempotently), and a
publisher with confirms.

Every consumer queue `Q` comes with retry tiers `Q.retry.<ms>` (a TTL queue whose expired
messages dead-letter back into `Q`) and a dead-letter queue `Q.dead` for poison messages.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel

from paxkit.config import Settings

RETRY_TIERS_MS = (1000, 5000, 30000)
HEARTBEAT_S = 30


# The msg mode's events (routing keys) and the queues that receive them.
PLACED = "txn.placed"  # the initiator's event: {gtid, order_id, branches: {name: part}}
COMPENSATE = "txn.compensate"
REPORTED = "branch.reported"  # {gtid, branch, op, ok, reason, effect}
SETTLED = "txn.settled"  # {gtid, order_id, status, reason}


class PublishFailed(Exception):
    """The broker did not take the message (nacked, unroutable, or the connection failed)."""


@dataclass(frozen=True)
class QueueSpec:
    """A consumer's queue and the routing keys that feed it."""

    name: str
    routing_keys: tuple[str, ...]

    def retry_queue(self, tier: int) -> str:
        return f"{self.name}.retry.{RETRY_TIERS_MS[tier]}"

    @property
    def dead_queue(self) -> str:
        return f"{self.name}.dead"


def connect(amqp_url: str) -> pika.BlockingConnection:
    """A connection with heartbeats and bounded connect/socket timeouts."""
    params = pika.URLParameters(amqp_url)
    params.heartbeat = HEARTBEAT_S
    params.blocked_connection_timeout = 30
    params.socket_timeout = 5
    params.stack_timeout = 10
    params.connection_attempts = 1
    return pika.BlockingConnection(params)


def declare_queue(channel: BlockingChannel, spec: QueueSpec, exchange: str) -> None:
    """The queue, its bindings, its retry tiers and its dead-letter queue (idempotent)."""
    channel.exchange_declare(exchange, exchange_type="topic", durable=True)
    channel.queue_declare(spec.name, durable=True)
    for key in spec.routing_keys:
        channel.queue_bind(spec.name, exchange, routing_key=key)
    for tier, ttl_ms in enumerate(RETRY_TIERS_MS):
        channel.queue_declare(
            spec.retry_queue(tier),
            durable=True,
            arguments={
                "x-message-ttl": ttl_ms,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": spec.name,
            },
        )
    channel.queue_declare(spec.dead_queue, durable=True)


@dataclass(frozen=True)
class Topology:
    """Exchange and queue names of one deployment; the namespace keeps two stacks sharing a
    broker (a developer's and the test suite's) from consuming each other's messages."""

    namespace: str
    queues: tuple[QueueSpec, ...] = ()

    @classmethod
    def of(cls, settings: Settings) -> Topology:
        """Every queue of the configured stack, under its namespace."""
        return cls(settings.mq_namespace, stack_queues(settings.participants))

    @property
    def exchange(self) -> str:
        return self.namespace

    def queue(self, spec: QueueSpec) -> QueueSpec:
        return QueueSpec(f"{self.namespace}.{spec.name}", spec.routing_keys)

    def declare(self, channel: BlockingChannel) -> None:
        """Every queue of the system, so a publish is never unroutable for want of one."""
        for spec in self.queues:
            declare_queue(channel, self.queue(spec), self.exchange)


def properties(message_id: str, headers: dict[str, Any] | None = None) -> pika.BasicProperties:
    return pika.BasicProperties(
        content_type="application/json",
        delivery_mode=pika.DeliveryMode.Persistent,
        message_id=message_id,
        headers=headers or {},
    )


class Publisher:
    """Persistent, mandatory publishes, each confirmed by the broker before returning."""

    def __init__(self, amqp_url: str, topology: Topology) -> None:
        self.connection = connect(amqp_url)
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()
        self.exchange = topology.exchange
        topology.declare(self.channel)

    def publish(
        self,
        routing_key: str,
        payload: Any,
        message_id: str | None = None,
        headers: dict[str, Any] | None = None,
    ) -> None:
        try:
            self.channel.basic_publish(
                self.exchange,
                routing_key,
                json.dumps(payload).encode(),
                properties(message_id or str(uuid.uuid4()), headers),
                mandatory=True,
            )
        except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as err:
            raise PublishFailed(f"{routing_key}: {err}") from err
        except pika.exceptions.AMQPError as err:
            raise PublishFailed(f"{routing_key}: broker connection failed: {err!r}") from err

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()


def participant_queue(name: str) -> QueueSpec:
    """Where a participant receives the transactions' events."""
    return QueueSpec(f"{name}.orders", (PLACED, COMPENSATE))


REPORTS_QUEUE = QueueSpec("coordinator.reports", (REPORTED,))
SETTLEMENTS_QUEUE = QueueSpec("initiator.settlements", (SETTLED,))


def stack_queues(participants: tuple[str, ...]) -> tuple[QueueSpec, ...]:
    """The queues of a stack: one per participant, the coordinator's, the initiator's."""
    return (*(participant_queue(n) for n in participants), REPORTS_QUEUE, SETTLEMENTS_QUEUE)


def queue_depths(amqp_url: str, topology: Topology) -> dict[str, int]:
    """Messages waiting in every queue and dead-letter queue (consumer lag, poison count)."""
    connection = connect(amqp_url)
    try:
        channel = connection.channel()
        depths = {}
        for spec in topology.queues:
            queue = topology.queue(spec)
            for name in (queue.name, queue.dead_queue):
                depths[name] = channel.queue_declare(name, passive=True).method.message_count
        return depths
    finally:
        connection.close()


def delete_topology(amqp_url: str, topology: Topology) -> None:
    """Drop every queue and the exchange of a deployment (tests and benchmarks start from an
    empty broker namespace)."""
    connection = connect(amqp_url)
    try:
        channel = connection.channel()
        for spec in topology.queues:
            queue = topology.queue(spec)
            names = [
                queue.name,
                queue.dead_queue,
                *map(queue.retry_queue, range(len(RETRY_TIERS_MS))),
            ]
            for name in names:
                channel.queue_delete(name)
        channel.exchange_delete(topology.exchange)
    finally:
        connection.close()
