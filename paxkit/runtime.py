"""The background work of a component, started by its app factory (never at import time):
periodic loops, its outbox relay and its message consumer."""

from __future__ import annotations

from typing import Protocol

from paxkit.config import Settings
from paxkit.consumer import Consumer, Handler
from paxkit.db import Database
from paxkit.deadletters import DeadLetters
from paxkit.faults import Faults
from paxkit.messaging import Publisher, QueueSpec, Topology
from paxkit.outbox import OutboxRelay


class Stoppable(Protocol):
    def stop(self, timeout_s: float = 5.0) -> None: ...


def dead_letter_store(settings: Settings, db: Database) -> DeadLetters:
    """A component's dead letters; replays go through a publisher of their own."""
    topology = Topology(settings.mq_namespace)
    return DeadLetters(db, lambda: Publisher(settings.amqp_url, topology))


def start_messaging(
    component: str,
    settings: Settings,
    db: Database,
    faults: Faults,
    queue: QueueSpec | None = None,
    handler: Handler | None = None,
) -> list[Stoppable]:
    """Relay this component's outbox, and consume its queue when it has one."""
    topology = Topology(settings.mq_namespace)
    workers: list[Stoppable] = [
        OutboxRelay(
            component, settings.db_urls[component], settings.amqp_url, topology, faults
        ).start()
    ]
    if queue is not None and handler is not None:
        consumer = Consumer(
            component,
            queue,
            handler,
            db,
            settings.amqp_url,
            topology,
            faults,
            dead_letter_store(settings, db),
        )
        workers.append(consumer.start())
    return workers
