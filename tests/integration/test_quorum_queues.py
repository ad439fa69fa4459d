"""Quorum queues (PAXMART_AMQP_QUEUE_TYPE=quorum) against the real broker: a message is
delivered and handled once; retry tiers bring a failed one back; a message delivered past
the delivery limit without an ack is dead-lettered by the broker, at least once, into the
queue's dead queue, which the consumer drains into its dead letters, from where a replay
handles it once; a queue declared with another type is refused with a clear error.

The queues live under a namespace of this module's own that names the type, and are
deleted afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis

from paxkit.config import Settings
from paxkit.consumer import Consumer
from paxkit.deadletters import DeadLetters
from paxkit.faults import Faults
from paxkit.messaging import (
    QUORUM,
    Publisher,
    QueueKind,
    QueueMismatch,
    Topology,
    connect,
    declare_queue,
    delete_topology,
)
from tests.helpers import wait_until
from tests.integration.test_consumer import SPEC, Probe, Rig, consumers, handler, probe_db

DELIVERY_LIMIT = 2
MAX_ATTEMPTS = 2


def quorum_topology(settings: Settings) -> Topology:
    return Topology(
        f"{settings.mq_namespace}_quorum_it",
        (SPEC,),
        retry_tiers_ms=(50, 100),
        kind=QueueKind(QUORUM, DELIVERY_LIMIT),
    )


@pytest.fixture(scope="module")
def rig(fresh_databases, scratch_db) -> Iterator[Rig]:
    db = probe_db(scratch_db)
    settings = fresh_databases
    topology = quorum_topology(settings)
    delete_topology(settings.amqp_url, topology, exchange=True)
    store = DeadLetters(db, lambda: Publisher(settings.amqp_url, topology))
    probe = Probe()
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=2)
    publisher = Publisher(settings.amqp_url, topology)  # declares the quorum queues
    queue = topology.queue(SPEC)
    made = Rig(db, probe, store, publisher, topology, queue.name, client)
    try:
        yield made
    finally:
        publisher.close()
        delete_topology(settings.amqp_url, topology, exchange=True)


@contextmanager
def consuming(rig: Rig, amqp_url: str) -> Iterator[Consumer]:
    running = Consumer(
        "probe",
        SPEC,
        handler(rig.probe),
        rig.db,
        amqp_url,
        rig.topology,
        Faults("probe", rig.redis),
        rig.store,
        max_attempts=MAX_ATTEMPTS,
    ).start()
    try:
        wait_until(lambda: consumers(amqp_url, rig.queue), what="the consumer attached")
        yield running
    finally:
        running.stop()


@pytest.fixture
def consumer(rig: Rig, fresh_databases: Settings) -> Iterator[Consumer]:
    with consuming(rig, fresh_databases.amqp_url) as running:
        yield running


def crash_with(amqp_url: str, queue: str) -> int | None:
    """Take the queue's next message and die holding it (the channel closes unacked, as a
    consumer's process killed mid-message does); its x-delivery-count, None if empty."""
    connection = connect(amqp_url)
    try:
        channel = connection.channel()
        method, props, _ = channel.basic_get(queue, auto_ack=False)
        if method is None:
            return None
        return int((props.headers or {}).get("x-delivery-count", 0))
    finally:
        connection.close()


def depth(amqp_url: str, queue: str) -> int:
    connection = connect(amqp_url)
    try:
        return int(connection.channel().queue_declare(queue, passive=True).method.message_count)
    finally:
        connection.close()


def test_a_queue_of_another_type_is_refused_with_a_clear_error(rig, fresh_databases):
    connection = connect(fresh_databases.amqp_url)
    try:
        with pytest.raises(QueueMismatch, match=r"can't change once declared.*NAMESPACE"):
            declare_queue(connection.channel(), rig.topology.queue(SPEC), rig.topology.exchange)
    finally:
        if connection.is_open:
            connection.close()


def test_past_the_delivery_limit_it_is_dead_lettered_at_least_once_and_replayed_once(
    rig, fresh_databases
):
    """No consumer attached at first: each delivery dies unacked, like a consumer killed
    with the message; past the limit the broker moves it to the dead queue (not lost, not
    delivered again), and the consumer, once up, records it in its dead letters."""
    url = fresh_databases.amqp_url
    message_id = rig.send({"n": 7})
    counts = [crash_with(url, rig.queue) for _ in range(DELIVERY_LIMIT + 1)]
    assert counts == list(range(DELIVERY_LIMIT + 1))  # delivered 1 + limit times
    assert crash_with(url, rig.queue) is None  # never delivered again
    dead_queue = rig.topology.queue(SPEC).dead_queue
    wait_until(lambda: depth(url, dead_queue) == 1, what="the message in the dead queue")
    assert rig.effects(7) == 0

    with consuming(rig, url):
        wait_until(lambda: rig.dead(message_id), what="the broker's dead letter recorded")
        [letter] = rig.dead(message_id)
        assert letter["reason"].startswith(f"delivery limit {DELIVERY_LIMIT} exceeded")
        assert letter["headers"] == {}  # the broker's x-death bookkeeping is not kept
        wait_until(lambda: depth(url, dead_queue) == 0, what="the dead queue drained")

        assert rig.store.replay([letter["id"]]) == [letter["id"]]
        wait_until(lambda: rig.effects(7) == 1, what="the replayed message handled")
        assert rig.dead(message_id) == []
        assert rig.probe.attempts(7) == 1


def test_a_message_is_delivered_and_handled_once(rig, consumer):
    rig.send({"n": 1})
    wait_until(lambda: rig.effects(1) == 1, what="the effect")
    assert rig.probe.attempts(1) == 1


def test_a_failed_message_comes_back_through_the_quorum_retry_tiers(rig, consumer):
    rig.probe.broken.add(4)
    message_id = rig.send({"n": 4})
    wait_until(lambda: rig.dead(message_id), what="dead-lettered after its attempts")
    [letter] = rig.dead(message_id)
    assert letter["attempts"] == MAX_ATTEMPTS  # it went through a retry tier and back
    assert rig.probe.attempts(4) == MAX_ATTEMPTS
    rig.probe.broken.discard(4)
    assert rig.store.replay([letter["id"]]) == [letter["id"]]
    wait_until(lambda: rig.effects(4) == 1, what="the replayed message handled")


def test_many_messages_each_handled_exactly_once(rig, consumer):
    ns = list(range(100, 140))
    for n in ns:
        rig.send({"n": n}, message_id=str(uuid.uuid4()))
    wait_until(lambda: all(rig.effects(n) == 1 for n in ns), what="every effect, once")
