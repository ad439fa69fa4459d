"""The messaging work of a component: its outbox relay and, when it has one, its consumer."""

from __future__ import annotations

from paxkit.component import Background
from paxkit.config import Settings
from paxkit.consumer import Consumer, Handler
from paxkit.db import Database
from paxkit.deadletters import DeadLetters
from paxkit.faults import Faults
from paxkit.messaging import Publisher, QueueSpec, Topology
from paxkit.outbox import OutboxRelay


def dead_letter_store(settings: Settings, db: Database) -> DeadLetters:
    """A component's dead letters; replays go through a publisher of their own."""
    topology = Topology.of(settings)
    return DeadLetters(db, lambda: Publisher(settings.amqp_url, topology))


def messaging_work(
    component: str,
    settings: Settings,
    db: Database,
    faults: Faults,
    queue: QueueSpec | None = None,
    handler: Handler | None = None,
) -> list[Background]:
    """Relay this component's outbox, and consume its queue when it has one (not started)."""
    topology = Topology.of(settings)
    work: list[Background] = [
        OutboxRelay(component, settings.db_urls[component], settings.amqp_url, topology, faults)
    ]
    if queue is not None and handler is not None:
        work.append(
            Consumer(
                component,
                queue,
                handler,
                db,
                settings.amqp_url,
                topology,
                faults,
                dead_letter_store(settings, db),
            )
        )
    return work
