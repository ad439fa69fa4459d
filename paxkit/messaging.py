"""RabbitMQ plumbing: connections, the topology (declared by code, idempotently), a
publisher with confirms, and the protocol's message shapes.

Every consumer queue `Q` comes with retry tiers `Q.retry.<ms>`: TTL queues whose expired
messages dead-letter back into `Q`. A message that can never be handled is recorded in
its consumer's own database instead (paxkit/deadletters.py), where it can be replayed.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel

from paxkit.config import Settings

RETRY_TIERS_MS = (1000, 5000, 30000)
HEARTBEAT_S = 30


# The msg mode's events (routing keys) and the queues that receive them. A branch's part
# travels under `<event>.<branch name>`, so only a participant with a part in a
# transaction hears of it.
BEGUN = "txn.begun"  # the initiator's event to the coordinator: {gtid, branches: [..]}
PLACED = "txn.placed"  # a branch's part: {gtid, order_id, branches: {name: part}}
COMPENSATE = "txn.compensate"
REPORTED = "branch.reported"  # {gtid, branch, op, ok, reason, effect}
SETTLED = "txn.settled"  # {gtid, order_id, status, reason}


# What a branch report says it did (op): its action, or its compensation.
ACTION = "action"
COMPENSATION = "compensate"
REPORT_OPS = (ACTION, COMPENSATION)


class PublishFailed(Exception):
    """The broker did not take the message (nacked, unroutable, or the connection failed)."""


class PoisonMessage(Exception):
    """A message that can never be handled (undecodable, invalid): it is dead-lettered."""


@dataclass(frozen=True)
class BranchReport:
    """A branch's report to the coordinator of one operation it carried out."""

    gtid: str
    branch: str
    op: str
    ok: bool
    reason: str | None = None
    effect: str | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> BranchReport:
        """The report in a message body; PoisonMessage when it is not one."""
        gtid, branch, op, ok = (body.get(k) for k in ("gtid", "branch", "op", "ok"))
        if not isinstance(gtid, str) or not isinstance(branch, str) or not gtid or not branch:
            raise PoisonMessage("a report needs a gtid and a branch")
        if op not in REPORT_OPS or not isinstance(ok, bool):
            raise PoisonMessage(f"a report's op must be one of {REPORT_OPS} and ok a boolean")
        reason, effect = body.get("reason"), body.get("effect")
        if not isinstance(reason, str | None) or not isinstance(effect, str | None):
            raise PoisonMessage("a report's reason and effect are strings")
        return cls(gtid, branch, op, ok, reason, effect)


@dataclass(frozen=True)
class QueueSpec:
    """A consumer's queue, the routing keys that feed it, and its retry delays."""

    name: str
    routing_keys: tuple[str, ...]
    retry_tiers_ms: tuple[int, ...] = RETRY_TIERS_MS

    def retry_queue(self, tier: int) -> str:
        return f"{self.name}.retry.{self.retry_tiers_ms[tier]}"

    def retry_delay_queue(self, attempts: int) -> str:
        """Where a message failed `attempts` times waits: growing delays, capped at the last."""
        return self.retry_queue(min(attempts, len(self.retry_tiers_ms)) - 1)

    @property
    def retry_queues(self) -> list[str]:
        return [self.retry_queue(tier) for tier in range(len(self.retry_tiers_ms))]


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
    """The queue, its bindings and its retry tiers (idempotent)."""
    channel.exchange_declare(exchange, exchange_type="topic", durable=True)
    channel.queue_declare(spec.name, durable=True)
    for key in spec.routing_keys:
        channel.queue_bind(spec.name, exchange, routing_key=key)
    for tier, ttl_ms in enumerate(spec.retry_tiers_ms):
        channel.queue_declare(
            spec.retry_queue(tier),
            durable=True,
            arguments={
                "x-message-ttl": ttl_ms,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": spec.name,
            },
        )


@dataclass(frozen=True)
class Topology:
    """Exchange and queue names of one deployment; the namespace keeps two stacks sharing a
    broker (a developer's and the test suite's) from consuming each other's messages."""

    namespace: str
    queues: tuple[QueueSpec, ...] = ()
    retry_tiers_ms: tuple[int, ...] = RETRY_TIERS_MS

    @classmethod
    def of(cls, settings: Settings) -> Topology:
        """Every queue of the configured stack, under its namespace."""
        return cls(settings.mq_namespace, stack_queues(settings.participants))

    @property
    def exchange(self) -> str:
        return self.namespace

    def queue(self, spec: QueueSpec) -> QueueSpec:
        return QueueSpec(f"{self.namespace}.{spec.name}", spec.routing_keys, self.retry_tiers_ms)

    @property
    def all_queues(self) -> list[QueueSpec]:
        return [self.queue(spec) for spec in self.queues]

    def declare(self, channel: BlockingChannel) -> None:
        """Every queue of the system, so a publish is never unroutable for want of one."""
        for spec in self.all_queues:
            declare_queue(channel, spec, self.exchange)


def properties(message_id: str, headers: dict[str, Any] | None = None) -> pika.BasicProperties:
    return pika.BasicProperties(
        content_type="application/json",
        delivery_mode=pika.DeliveryMode.Persistent,
        message_id=message_id,
        headers=headers or {},
    )


@dataclass(frozen=True)
class Outgoing:
    """One message of a batch to publish."""

    routing_key: str
    payload: Any
    message_id: str
    headers: dict[str, Any] | None = None


class Publisher:
    """Persistent, mandatory publishes, each confirmed by the broker before returning, and
    batches published in one AMQP transaction (`publish_all`)."""

    def __init__(self, amqp_url: str, topology: Topology) -> None:
        self.connection = connect(amqp_url)
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()
        self.exchange = topology.exchange
        topology.declare(self.channel)
        self._batch_channel: BlockingChannel | None = None
        self._returned: list[str] = []

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

    def publish_all(self, messages: Sequence[Outgoing]) -> None:
        """Publish a batch in one AMQP transaction: one round trip for the batch instead of a
        confirm per message. RabbitMQ makes a transaction's messages durable and sends its
        no-route returns on commit, so when this returns the broker holds every message;
        an unroutable one fails the batch (all of it is published again later, and
        consumers dedupe by message id)."""
        if not messages:
            return
        try:
            channel = self._transactional_channel()
            for message in messages:
                channel.basic_publish(
                    self.exchange,
                    message.routing_key,
                    json.dumps(message.payload).encode(),
                    properties(message.message_id, message.headers),
                    mandatory=True,
                )
            channel.tx_commit()
            self.connection.process_data_events(time_limit=0)  # hand over the returns
        except pika.exceptions.AMQPError as err:
            failed = f"batch of {len(messages)}: broker connection failed: {err!r}"
            raise PublishFailed(failed) from err
        if self._returned:
            unroutable, self._returned = self._returned, []
            raise PublishFailed(f"unroutable: {', '.join(sorted(set(unroutable)))}")

    def _transactional_channel(self) -> BlockingChannel:
        if self._batch_channel is None:
            channel = self.connection.channel()
            channel.tx_select()
            channel.add_on_return_callback(
                lambda _ch, method, _props, _body: self._returned.append(method.routing_key)
            )
            self._batch_channel = channel
        return self._batch_channel

    def send_to_queue(
        self, queue: str, body: bytes, message_id: str | None, headers: dict[str, Any]
    ) -> None:
        """Put a message straight into one queue (a replayed dead letter), confirmed."""
        try:
            self.channel.basic_publish(
                "", queue, body, properties(message_id or "", headers), mandatory=True
            )
        except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as err:
            raise PublishFailed(f"{queue}: {err}") from err
        except pika.exceptions.AMQPError as err:
            raise PublishFailed(f"{queue}: broker connection failed: {err!r}") from err

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()


def branch_key(event: str, branch: str) -> str:
    """The routing key of `event` (PLACED or COMPENSATE) for one branch."""
    return f"{event}.{branch}"


def event_of(routing_key: str) -> str:
    """The event a branch's routing key carries (`txn.placed.inventory` -> PLACED)."""
    return routing_key.rsplit(".", 1)[0]


@dataclass(frozen=True)
class Message:
    """An event to publish: its routing key and its body."""

    routing_key: str
    payload: dict[str, Any]


def branch_messages(
    event: str, gtid: str, order_id: str | None, parts: dict[str, dict[str, Any]]
) -> list[Message]:
    """`event` for each branch, carrying only that branch's part."""
    return [
        Message(
            branch_key(event, name), {"gtid": gtid, "order_id": order_id, "branches": {name: part}}
        )
        for name, part in sorted(parts.items())
    ]


def transaction_messages(
    gtid: str, order_id: str, parts: dict[str, dict[str, Any]]
) -> list[Message]:
    """What an initiator sends to start a msg transaction: the begin, for the coordinator
    to keep its outcome, and each branch's part, for the branches to apply."""
    branches = [{"name": name, "payload": part} for name, part in parts.items()]
    begun = Message(BEGUN, {"gtid": gtid, "order_id": order_id, "branches": branches})
    return [begun, *branch_messages(PLACED, gtid, order_id, parts)]


def participant_queue(name: str) -> QueueSpec:
    """Where a participant receives its parts of the transactions' events."""
    return QueueSpec(f"{name}.orders", (branch_key(PLACED, name), branch_key(COMPENSATE, name)))


REPORTS_QUEUE = QueueSpec("coordinator.reports", (REPORTED, BEGUN))
SETTLEMENTS_QUEUE = QueueSpec("initiator.settlements", (SETTLED,))


def stack_queues(participants: tuple[str, ...]) -> tuple[QueueSpec, ...]:
    """The queues of a stack: one per participant, the coordinator's, the initiator's."""
    return (*(participant_queue(n) for n in participants), REPORTS_QUEUE, SETTLEMENTS_QUEUE)


def queue_depths(amqp_url: str, topology: Topology) -> dict[str, int]:
    """Messages waiting in every queue (consumer lag) and in its retry tiers."""
    connection = connect(amqp_url)
    try:
        channel = connection.channel()
        depths = {}
        for queue in topology.all_queues:
            for name in (queue.name, *queue.retry_queues):
                depths[name] = channel.queue_declare(name, passive=True).method.message_count
        return depths
    finally:
        connection.close()


def delete_topology(amqp_url: str, topology: Topology, exchange: bool = False) -> None:
    """Drop every queue of a deployment, and its exchange if asked (tests and benchmarks
    start from an empty broker, and leave nothing behind)."""
    connection = connect(amqp_url)
    try:
        channel = connection.channel()
        for queue in topology.all_queues:
            for name in (queue.name, *queue.retry_queues):
                channel.queue_delete(name)
        if exchange:
            channel.exchange_delete(topology.exchange)
    finally:
        connection.close()
