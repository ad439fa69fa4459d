"""Wiring for a participant service: its database, its XA branch, its read endpoints."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask
from sqlalchemy import Connection

from paxkit.app import create_base_app, make_faults
from paxkit.barrier import BarrierBranch, SagaActions, TccActions, barrier_blueprint
from paxkit.config import Settings
from paxkit.consumer import Handler
from paxkit.db import Database, make_engine
from paxkit.deadletters import serve_dead_letters
from paxkit.messaging import (
    ACTION,
    COMPENSATION,
    PLACED,
    REPORTED,
    BranchReport,
    PoisonMessage,
    participant_queue,
)
from paxkit.metrics import outbox_probe
from paxkit.outbox import enqueue
from paxkit.runtime import dead_letter_store, start_messaging
from paxkit.xa import AbortHook, Action, XaBranch, xa_blueprint


@dataclass(frozen=True)
class ParticipantSpec:
    """What a service declares: its name, its business actions per protocol, its reads."""

    name: str
    xa_action: Action
    reads: Blueprint
    on_abort: AbortHook | None = None
    tcc: TccActions | None = None
    saga: SagaActions | None = None


Take = Callable[[Connection, dict[str, Any], str], None]  # (conn, payload, into state)
Move = Callable[[Connection, str, str, str], None]  # (conn, gtid, from state, to state)


@dataclass(frozen=True)
class Holding:
    """A participant whose effect is putting something on hold for an order (stock, a coupon,
    money). It declares how to take it into a state and how to move it between states; every
    protocol's actions follow from that."""

    take: Take
    move: Move
    held: str  # where a TCC Try leaves it
    final: str  # where a committed order leaves it
    released: str  # where a cancel or a compensation returns it

    def spec(self, name: str, reads: Blueprint) -> ParticipantSpec:
        return ParticipantSpec(
            name=name,
            xa_action=lambda conn, p: self.take(conn, p, self.final),
            reads=reads,
            tcc=TccActions(
                try_=lambda conn, p: self.take(conn, p, self.held),
                confirm=lambda conn, p: self.move(conn, p["gtid"], self.held, self.final),
                cancel=lambda conn, p: self.move(conn, p["gtid"], self.held, self.released),
            ),
            saga=SagaActions(
                action=lambda conn, p: self.take(conn, p, self.final),
                compensate=lambda conn, p: self.move(conn, p["gtid"], self.final, self.released),
            ),
        )


def create_participant_app(
    spec: ParticipantSpec, settings: Settings, db: Database | None = None
) -> Flask:
    app = create_base_app(spec.name, settings)
    db = db or Database(make_engine(settings.db_urls[spec.name]))
    faults = make_faults(spec.name, settings)
    branch = XaBranch(
        spec.name, db, spec.xa_action, faults, settings.lock_timeout_ms, on_abort=spec.on_abort
    )
    app.extensions["paxmart.gauges"] = [outbox_probe(spec.name, db)]
    app.extensions["paxmart.db"] = db
    app.extensions["paxmart.xa"] = branch
    app.register_blueprint(xa_blueprint(branch))
    if spec.tcc is not None or spec.saga is not None:
        guarded = BarrierBranch(
            spec.name, db, faults, settings.lock_timeout_ms, tcc=spec.tcc, saga=spec.saga
        )
        app.extensions["paxmart.barrier"] = guarded
        app.register_blueprint(barrier_blueprint(guarded))
        if spec.saga is not None:
            serve_dead_letters(app, spec.name, dead_letter_store(settings, db))
        if spec.saga is not None and settings.background_enabled:
            app.extensions["paxmart.loops"] = start_messaging(
                spec.name,
                settings,
                db,
                faults,
                participant_queue(spec.name),
                branch_message_handler(guarded),
            )
    app.register_blueprint(spec.reads)
    return app


def branch_message_handler(branch: BarrierBranch) -> Handler:
    """msg mode: apply (or compensate) this service's part of an order event through the
    barrier, and report the outcome back, all in the consumer's local transaction."""

    def handle(conn: Connection, event: dict[str, Any], routing_key: str) -> None:
        gtid, parts = event.get("gtid"), event.get("branches")
        if not isinstance(gtid, str) or not isinstance(parts, dict):
            raise PoisonMessage("an order event needs a gtid and its branches' parts")
        part = parts.get(branch.name)
        if part is None:
            return  # this order needs nothing from this service
        if not isinstance(part, dict):
            raise PoisonMessage(f"the part of {branch.name} is not an object")
        op = ACTION if routing_key == PLACED else COMPENSATION
        outcome = branch.within(conn, op, gtid, part)
        report = BranchReport(gtid, branch.name, op, outcome.ok, outcome.reason, outcome.effect)
        enqueue(conn, REPORTED, report.as_json())

    return handle


def db_of(app: Flask) -> Database:
    db: Database = app.extensions["paxmart.db"]
    return db
