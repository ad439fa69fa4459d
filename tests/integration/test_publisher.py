"""The publisher against real RabbitMQ: a batch published in one AMQP transaction arrives
whole, persistent, with its message ids and headers; a batch holding an unroutable message
fails as a whole, so the relay marks none of it sent and publishes it all again later."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pika
import pytest

from paxkit.messaging import (
    Outgoing,
    Publisher,
    PublishFailed,
    QueueSpec,
    Topology,
    connect,
    delete_topology,
)

SPEC = QueueSpec("batch_probe", ("probe.batch",))


@pytest.fixture
def topology(fresh_databases) -> Iterator[Topology]:
    settings = fresh_databases
    topology = Topology(f"{settings.mq_namespace}_publisher_it", (SPEC,), retry_tiers_ms=(50,))
    publisher = Publisher(settings.amqp_url, topology)  # declares the exchange and queue
    publisher.close()
    yield topology
    delete_topology(settings.amqp_url, topology, exchange=True)


@pytest.fixture
def publisher(fresh_databases, topology) -> Iterator[Publisher]:
    publisher = Publisher(fresh_databases.amqp_url, topology)
    yield publisher
    publisher.close()


def drain(amqp_url: str, queue: str) -> list[tuple[pika.BasicProperties, bytes]]:
    connection = connect(amqp_url)
    try:
        channel = connection.channel()
        got: list[tuple[pika.BasicProperties, bytes]] = []
        while True:
            method, props, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return got
            got.append((props, body))
    finally:
        connection.close()


def batch(n: int, key: str = "probe.batch") -> list[Outgoing]:
    return [Outgoing(key, {"n": i}, f"msg-{i}", {"traceparent": f"tp-{i}"}) for i in range(n)]


def test_a_batch_arrives_whole_persistent_and_labelled(fresh_databases, topology, publisher):
    publisher.publish_all(batch(50))
    got = drain(fresh_databases.amqp_url, topology.queue(SPEC).name)
    assert [json.loads(body)["n"] for _, body in got] == list(range(50))
    assert [props.message_id for props, _ in got] == [f"msg-{i}" for i in range(50)]
    assert {props.delivery_mode for props, _ in got} == {pika.DeliveryMode.Persistent.value}
    assert got[7][0].headers == {"traceparent": "tp-7"}


def test_an_unroutable_message_fails_its_batch(fresh_databases, topology, publisher):
    messages = [*batch(3), Outgoing("nobody.listens", {"n": 99}, "msg-99")]
    with pytest.raises(PublishFailed, match=r"nobody\.listens"):
        publisher.publish_all(messages)
    drain(fresh_databases.amqp_url, topology.queue(SPEC).name)
    publisher.publish_all(batch(2))  # the channel is still good, the failure is not sticky
    got = drain(fresh_databases.amqp_url, topology.queue(SPEC).name)
    assert [props.message_id for props, _ in got] == ["msg-0", "msg-1"]


def test_an_empty_batch_publishes_nothing(fresh_databases, topology, publisher):
    publisher.publish_all([])
    assert drain(fresh_databases.amqp_url, topology.queue(SPEC).name) == []
