"""RabbitMQ plumbing: connections, the topology (declared by code, idempotently), a
publisher with confirms, and the protocol's message shapes.

Every consumer queue `Q` comes with retry tiers `Q.retry.<ms>`: TTL queues whose expired
messages dead-letter back into `Q`. A message that can never be handled is recorded in
its consumer's own database instead (paxkit/deadletters.py), where it can be replayed.

The queues are classic by default; `PAXMART_AMQP_QUEUE_TYPE=quorum` makes every one a
quorum queue (replicated on a cluster, `QueueKind`). A quorum queue `Q` has a delivery
limit (`PAXMART_AMQP_DELIVERY_LIMIT`): a message delivered that many times without an ack
(its consumer crashed with it, or requeued it) is dead-lettered by the broker, at least
once, into `Q.dead`, which the consumer drains into its dead letters like any other. A
queue's type and arguments can't change once declared: declaring it with others fails
with `QueueMismatch`, which names the way out.
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
CLASSIC = "classic"
QUORUM = "quorum"
QUEUE_TYPES = (CLASSIC, QUORUM)
DEFAULT_DELIVERY_LIMIT = 20
PRECONDITION_FAILED = 406


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


class QueueMismatch(Exception):
    """A queue exists on the broker with other arguments (another type) than configured."""


@dataclass(frozen=True)
class QueueKind:
    """The type of every queue of a deployment, and a quorum queue's delivery limit."""

    type: str = CLASSIC
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT

    def __post_init__(self) -> None:
        if self.type not in QUEUE_TYPES:
            raise ValueError(f"queue type {self.type!r} is not one of {QUEUE_TYPES}")
        if self.delivery_limit < 1:
            raise ValueError(f"a delivery limit must be at least 1, not {self.delivery_limit}")

    @property
    def quorum(self) -> bool:
        return self.type == QUORUM

    def arguments(self, dead_letter_queue: str | None = None) -> dict[str, Any]:
        """A queue's arguments; `dead_letter_queue` is where the broker moves what its
        expiry (a retry tier) or its delivery limit (a consumer queue) dead-letters."""
        args: dict[str, Any] = {}
        if self.quorum:
            args["x-queue-type"] = QUORUM
        if dead_letter_queue is not None:
            args["x-dead-letter-exchange"] = ""
            args["x-dead-letter-routing-key"] = dead_letter_queue
            if self.quorum:
                # Kept by the source queue until the target confirms it: nothing is lost
                # between the two, and a full target refuses publishes instead of dropping.
                args["x-dead-letter-strategy"] = "at-least-once"
                args["x-overflow"] = "reject-publish"
        return args

    def consumer_arguments(self, dead_queue: str) -> dict[str, Any]:
        if not self.quorum:
            return {}
        return {**self.arguments(dead_queue), "x-delivery-limit": self.delivery_limit}


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

    @property
    def dead_queue(self) -> str:
        """Where a quorum queue's broker dead-letters a message past its delivery limit."""
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


def _declare(
    channel: BlockingChannel, name: str, arguments: dict[str, Any], kind: QueueKind
) -> None:
    """One durable queue; QueueMismatch when it exists with other arguments."""
    try:
        channel.queue_declare(name, durable=True, arguments=arguments or None)
    except pika.exceptions.ChannelClosedByBroker as err:
        if err.reply_code != PRECONDITION_FAILED:
            raise
        raise QueueMismatch(
            f"queue {name} already exists with other arguments than {arguments} "
            f"(PAXMART_AMQP_QUEUE_TYPE={kind.type}, PAXMART_AMQP_DELIVERY_LIMIT="
            f"{kind.delivery_limit}); a queue's type and arguments can't change once "
            "declared: drain and delete the deployment's queues, or give it another "
            f"PAXMART_MQ_NAMESPACE. The broker said: {err.reply_text}"
        ) from err


def declare_queue(
    channel: BlockingChannel, spec: QueueSpec, exchange: str, kind: QueueKind | None = None
) -> None:
    """The queue, its bindings, its retry tiers and (quorum) its dead queue (idempotent)."""
    kind = kind or QueueKind()
    channel.exchange_declare(exchange, exchange_type="topic", durable=True)
    if kind.quorum:
        _declare(channel, spec.dead_queue, kind.arguments(), kind)
    _declare(channel, spec.name, kind.consumer_arguments(spec.dead_queue), kind)
    for key in spec.routing_keys:
        channel.queue_bind(spec.name, exchange, routing_key=key)
    for tier, ttl_ms in enumerate(spec.retry_tiers_ms):
        arguments = {"x-message-ttl": ttl_ms, **kind.arguments(spec.name)}
        _declare(channel, spec.retry_queue(tier), arguments, kind)


@dataclass(frozen=True)
class Topology:
    """Exchange and queue names of one deployment; the namespace keeps two stacks sharing a
    broker (a developer's and the test suite's) from consuming each other's messages."""

    namespace: str
    queues: tuple[QueueSpec, ...] = ()
    retry_tiers_ms: tuple[int, ...] = RETRY_TIERS_MS
    kind: QueueKind = QueueKind()

    @classmethod
    def of(cls, settings: Settings) -> Topology:
        """Every queue of the configured stack, under its namespace."""
        kind = QueueKind(settings.amqp_queue_type, settings.amqp_delivery_limit)
        return cls(settings.mq_namespace, stack_queues(settings.participants), kind=kind)

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
            declare_queue(channel, spec, self.exchange, self.kind)

    def queue_names(self, spec: QueueSpec) -> list[str]:
        """A (namespaced) queue's own name, its retry tiers' and (quorum) its dead queue's."""
        dead = [spec.dead_queue] if self.kind.quorum else []
        return [spec.name, *spec.retry_queues, *dead]


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
            for name in topology.queue_names(queue):
                depths[name] = channel.queue_declare(name, passive=True).method.message_count
        return depths
    finally:
        connection.close()


def queue_names_any_kind(spec: QueueSpec) -> list[str]:
    """Every queue name a spec may have on the broker, whichever type it was declared as."""
    return [spec.name, *spec.retry_queues, spec.dead_queue]


def delete_topology(amqp_url: str, topology: Topology, exchange: bool = False) -> None:
    """Drop every queue of a deployment, and its exchange if asked (tests and benchmarks
    start from an empty broker, and leave nothing behind)."""
    connection = connect(amqp_url)
    try:
        channel = connection.channel()
        for queue in topology.all_queues:
            for name in queue_names_any_kind(queue):
                channel.queue_delete(name)
        if exchange:
            channel.exchange_delete(topology.exchange)
    finally:
        connection.close()
