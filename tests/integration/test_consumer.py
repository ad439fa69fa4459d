"""The message consumer against real RabbitMQ and Postgres: a transient database error is
retried past any attempt limit, a message that can never succeed is dead-lettered with its
reason, and a replayed dead letter is handled once, however often it is replayed."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from pika.exceptions import ChannelClosedByBroker
from sqlalchemy import Connection, text

from paxkit.consumer import Consumer
from paxkit.db import Database
from paxkit.deadletters import DeadLetters
from paxkit.faults import Faults, arm
from paxkit.messaging import (
    PoisonMessage,
    Publisher,
    QueueSpec,
    Topology,
    connect,
    delete_topology,
    properties,
)
from tests.helpers import wait_until

SPEC = QueueSpec("probe", ("probe.event",))
MAX_ATTEMPTS = 2
LOCK_WAIT_MS = 20


@dataclass
class Probe:
    """What the handler does, changed by the tests as they go."""

    broken: set[int] = field(default_factory=set)  # these n raise an unexpected error
    calls: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def attempts(self, n: int) -> int:
        with self.lock:
            return self.calls.count(n)


def handler(probe: Probe) -> Callable[[Connection, dict[str, Any], str], None]:
    def handle(conn: Connection, payload: dict[str, Any], routing_key: str) -> None:
        n = payload.get("n")
        if not isinstance(n, int):
            raise PoisonMessage("a probe event needs an integer n")
        with probe.lock:
            probe.calls.append(n)
        if n in probe.broken:
            raise ValueError(f"the handler cannot deal with {n} (yet)")
        # Waits for the row's lock at most LOCK_WAIT_MS: a held lock is a transient error.
        conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_WAIT_MS}ms'"))
        conn.execute(text("UPDATE probe_gate SET opened = opened + 1"))
        conn.execute(text("INSERT INTO probe_effects (n) VALUES (:n)"), {"n": n})

    return handle


@dataclass
class Rig:
    db: Database
    probe: Probe
    store: DeadLetters
    publisher: Publisher
    topology: Topology
    queue: str
    redis: redis.Redis

    def send(self, payload: Any, message_id: str | None = None) -> str:
        message_id = message_id or str(uuid.uuid4())
        self.publisher.publish("probe.event", payload, message_id=message_id)
        return message_id

    def send_raw(self, body: bytes) -> str:
        message_id = str(uuid.uuid4())
        self.publisher.channel.basic_publish(
            self.topology.exchange, "probe.event", body, properties(message_id), mandatory=True
        )
        return message_id

    def effects(self, n: int) -> int:
        row = self.db.fetch_one("SELECT count(*) AS c FROM probe_effects WHERE n = :n", n=n)
        return int(row["c"]) if row else -1

    def dead(self, message_id: str) -> list[dict[str, Any]]:
        return [
            {"id": d.id, "reason": d.reason, "attempts": d.attempts, "headers": d.headers}
            for d in self.store.oldest(100)
            if d.message_id == message_id
        ]


def probe_db(scratch_db: Callable[[str], Database]) -> Database:
    """A scratch database with the messaging tables and the probe's own."""
    db = scratch_db("coupon")  # any database with the messaging tables
    with db.transaction() as conn:
        conn.execute(text("CREATE TABLE probe_effects (n integer NOT NULL)"))
        conn.execute(text("CREATE TABLE probe_gate (opened integer NOT NULL)"))
        conn.execute(text("INSERT INTO probe_gate VALUES (0)"))
    return db


@pytest.fixture(scope="module")
def rig(fresh_databases, scratch_db) -> Iterator[Rig]:
    db = probe_db(scratch_db)
    settings = fresh_databases
    topology = Topology(
        f"{settings.mq_namespace}_consumer_it", (SPEC,), retry_tiers_ms=(50, 100, 200)
    )
    store = DeadLetters(db, lambda: Publisher(settings.amqp_url, topology))
    probe = Probe()
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=2)
    consumer = Consumer(
        "probe",
        SPEC,
        handler(probe),
        db,
        settings.amqp_url,
        topology,
        Faults("probe", client),
        store,
        max_attempts=MAX_ATTEMPTS,
    ).start()
    publisher = Publisher(settings.amqp_url, topology)
    queue = topology.queue(SPEC)
    wait_until(lambda: consumers(settings.amqp_url, queue.name), what="the consumer attached")
    try:
        yield Rig(db, probe, store, publisher, topology, queue.name, client)
    finally:
        consumer.stop()
        publisher.close()
        delete_topology(settings.amqp_url, topology, exchange=True)
        connection = connect(settings.amqp_url)
        try:
            channel = connection.channel()
            for name in (queue.name, *queue.retry_queues):
                channel.queue_delete(name)
        finally:
            connection.close()


def consumers(amqp_url: str, queue: str) -> int:
    connection = connect(amqp_url)
    try:
        channel = connection.channel()
        try:
            return int(channel.queue_declare(queue, passive=True).method.consumer_count)
        except ChannelClosedByBroker:  # not declared yet
            return 0
    finally:
        if connection.is_open:
            connection.close()


def test_a_message_is_handled_once(rig):
    rig.send({"n": 1})
    wait_until(lambda: rig.effects(1) == 1, what="the effect")
    assert rig.store.count() == 0


def test_a_transient_database_error_is_retried_past_every_attempt_limit(rig):
    """The handler's row stays locked (a real lock wait timing out, as under a database
    in trouble) for many more attempts than max_attempts; the message waits it out."""
    blocker = rig.db.engine.connect()
    try:
        blocker.begin()
        blocker.execute(text("SELECT opened FROM probe_gate FOR UPDATE"))
        message_id = rig.send({"n": 2})
        wait_until(
            lambda: rig.probe.attempts(2) >= 5 * MAX_ATTEMPTS,
            timeout_s=20,
            what="the message retried well past max_attempts",
        )
        assert rig.effects(2) == 0
        assert rig.dead(message_id) == []
    finally:
        blocker.rollback()
        blocker.close()
    wait_until(lambda: rig.effects(2) == 1, timeout_s=10, what="the effect once unlocked")
    assert rig.dead(message_id) == []


def test_an_undecodable_or_invalid_message_is_dead_lettered_at_once(rig):
    garbled = rig.send_raw(b"\xff not json")
    invalid = rig.send({"n": "three"})
    wait_until(lambda: rig.dead(garbled) and rig.dead(invalid), what="both dead letters")
    [garbled_letter], [invalid_letter] = rig.dead(garbled), rig.dead(invalid)
    assert garbled_letter["attempts"] == 1 and "not JSON" in garbled_letter["reason"]
    assert invalid_letter["attempts"] == 1
    assert invalid_letter["reason"] == "poison: a probe event needs an integer n"
    assert invalid_letter["headers"]["x-routing-key"] == "probe.event"


def test_an_unexpected_error_is_dead_lettered_after_max_attempts_and_replayed_once(rig):
    rig.probe.broken.add(4)
    message_id = rig.send({"n": 4})
    wait_until(lambda: rig.dead(message_id), what="the dead letter")
    [letter] = rig.dead(message_id)
    assert letter["attempts"] == MAX_ATTEMPTS
    assert letter["reason"].startswith(f"failed {MAX_ATTEMPTS} times: ValueError(")
    assert rig.effects(4) == 0

    rig.probe.broken.discard(4)  # the bug is fixed
    assert rig.store.replay([letter["id"]]) == [letter["id"]]
    wait_until(lambda: rig.effects(4) == 1, what="the replayed message handled")
    assert rig.dead(message_id) == []

    # Replayed twice (say the first replay's delete was lost): the inbox dedupes it.
    stored = [d for d in rig.store.oldest(100) if d.message_id == message_id]
    assert stored == []
    rig.store.record(
        rig.queue, message_id, "probe.event", json.dumps({"n": 4}).encode(), {}, "again", 2
    )
    calls = rig.probe.attempts(4)
    [again] = rig.dead(message_id)
    assert rig.store.replay([again["id"]]) == [again["id"]]
    rig.send({"n": 5})  # a later message: once it is handled, so is the replay before it
    wait_until(lambda: rig.effects(5) == 1, what="the next message")
    assert rig.effects(4) == 1
    assert rig.probe.attempts(4) == calls  # the inbox answered: the handler never ran
    assert rig.dead(message_id) == []


def test_replaying_unknown_ids_replays_nothing(rig):
    assert rig.store.replay([str(uuid.uuid4())]) == []


def test_a_failure_between_commit_and_ack_redelivers_and_never_stalls_the_consumer(rig):
    """More such failures than the prefetch window: each message is delivered again, found
    in the inbox, acked; the consumer goes on."""
    ns = list(range(500, 524))
    arm(rig.redis, "probe", "consumer_after_commit", "fail", times=len(ns))
    for n in ns:
        rig.send({"n": n})
    wait_until(lambda: all(rig.effects(n) == 1 for n in ns), what="every effect, once")
    rig.send({"n": 600})
    wait_until(lambda: rig.effects(600) == 1, what="the consumer still consuming")
    assert all(rig.probe.attempts(n) == 1 for n in ns), "redeliveries were inbox duplicates"
