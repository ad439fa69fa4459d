"""Wiring for a service: its database and its own endpoints; a participant adds its XA
branch, its barrier-guarded TCC/saga endpoints and, when the stack enables the unsafe
`naive` baseline, its XA action committed on its own (paxkit/naive.py); when it enables
three-phase commit, its 3PC branch, on the same XA action (paxkit/threepc.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask
from sqlalchemy import Connection

from paxkit.app import make_faults
from paxkit.audit import HoldStates, Ledger, LedgerAudit, ledger_blueprint
from paxkit.background import Loop
from paxkit.barrier import BarrierBranch, SagaActions, TccActions, barrier_blueprint
from paxkit.component import Background, Component, ComponentSpec
from paxkit.config import Settings
from paxkit.consumer import Handler
from paxkit.db import Database, make_engine
from paxkit.deadletters import serve_dead_letters
from paxkit.errors import InvalidInput
from paxkit.http import component_client
from paxkit.messaging import (
    ACTION,
    COMPENSATION,
    PLACED,
    REPORTED,
    BranchReport,
    PoisonMessage,
    event_of,
    participant_queue,
)
from paxkit.metrics import outbox_probe
from paxkit.naive import NaiveBranch, naive_blueprint
from paxkit.outbox import enqueue
from paxkit.retention import Retention, Rule, coordinator_outcomes, participant_rules
from paxkit.runtime import dead_letter_store, messaging_work
from paxkit.schema import PARTICIPANT_MIGRATIONS
from paxkit.threepc import ThreePhaseBranch, Timeouts, threepc_audit_blueprint, threepc_blueprint
from paxkit.web import create_app
from paxkit.xa import Action, XaBranch, xa_blueprint


@dataclass(frozen=True)
class ParticipantSpec:
    """What a service declares: its name, its business actions per protocol, its reads."""

    name: str
    xa_action: Action
    reads: Blueprint
    tcc: TccActions | None = None
    saga: SagaActions | None = None
    ledger: Ledger | None = None
    states: HoldStates | None = None
    # Tables of its own under retention, beside the protocol tables every participant has.
    retention: tuple[Rule, ...] = ()


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
    ledger: Ledger  # how its data answers the audit

    def spec(self, name: str, reads: Blueprint) -> ParticipantSpec:
        return ParticipantSpec(
            name=name,
            ledger=self.ledger,
            states=HoldStates(self.held, self.final),
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


class ParticipantComponent(Component):
    """A participant service's objects: its database, its XA and barrier branches."""

    def __init__(self, spec: ParticipantSpec, settings: Settings, db: Database | None = None):
        super().__init__(spec.name, settings)
        self.spec = spec
        self.db = db or Database(make_engine(settings.db_urls[spec.name]))
        self.faults = make_faults(spec.name, settings)
        self.xa = XaBranch(
            spec.name, self.db, spec.xa_action, self.faults, settings.lock_timeout_ms
        )
        self.barrier = (
            BarrierBranch(
                spec.name,
                self.db,
                self.faults,
                settings.lock_timeout_ms,
                tcc=spec.tcc,
                saga=spec.saga,
            )
            if spec.tcc is not None or spec.saga is not None
            else None
        )
        self.naive = NaiveBranch(spec.name, self.db, spec.xa_action, settings.lock_timeout_ms)
        self.threepc = ThreePhaseBranch(
            self.xa,
            Timeouts(settings.threepc_uncertain_timeout_s, settings.threepc_precommit_timeout_s),
        )
        self.retention = protocol_retention(spec.name, settings, self.db, spec.retention)

    def register(self, app: Flask) -> None:
        app.extensions["paxmart.gauges"] = [
            outbox_probe(self.name, self.db),
            self.retention.probe(),
        ]
        app.extensions["paxmart.db"] = self.db
        app.extensions["paxmart.retention"] = self.retention
        app.register_blueprint(xa_blueprint(self.xa))
        if self.barrier is not None:
            app.register_blueprint(barrier_blueprint(self.barrier))
        if self.settings.naive_mode:
            app.register_blueprint(naive_blueprint(self.naive))
        if self.settings.threepc_mode:
            app.register_blueprint(threepc_blueprint(self.threepc))
        app.register_blueprint(threepc_audit_blueprint(self.threepc))
        if self.spec.saga is not None:
            serve_dead_letters(app, self.name, dead_letter_store(self.settings, self.db))
        if self.spec.ledger is not None and self.spec.states is not None:
            audit = LedgerAudit(self.name, self.db, self.spec.ledger, self.spec.states)
            app.register_blueprint(ledger_blueprint(audit))
        app.register_blueprint(self.spec.reads)

    def background(self) -> list[Background]:
        """Retention, 3PC's own timeouts where the mode is on, and messaging: in msg mode
        its part of every order event arrives through its queue (saga actions)."""
        retention = Loop(
            f"{self.name}-retention", self.retention.run_once, self.settings.retention_interval_s
        )
        loops = [retention, *self._threepc_timeouts()]
        if self.barrier is None or self.spec.saga is None:
            return [*loops, *messaging_work(self.name, self.settings, self.db, self.faults)]
        return [
            *loops,
            *messaging_work(
                self.name,
                self.settings,
                self.db,
                self.faults,
                participant_queue(self.name),
                branch_message_handler(self.barrier),
            ),
        ]

    def _threepc_timeouts(self) -> list[Background]:
        """A 3PC branch's decisions on its own, checked every recovery interval."""
        if not self.settings.threepc_mode:
            return []
        interval = self.settings.recovery_interval_s
        return [Loop(f"{self.name}-3pc-timeouts", self.threepc.run_timeouts, interval)]

    def close(self) -> None:
        self.db.dispose()


def participant(spec: ParticipantSpec, migrations: Path) -> ComponentSpec:
    """The declaration of a participant service: its actions and its own migrations."""
    return ComponentSpec(
        spec.name,
        lambda settings: ParticipantComponent(spec, settings),
        (*PARTICIPANT_MIGRATIONS, migrations),
    )


def create_participant_app(
    spec: ParticipantSpec, settings: Settings, db: Database | None = None
) -> Flask:
    """A participant's web app on its own (tests, one-off tools)."""
    return create_app(ParticipantComponent(spec, settings, db))


def protocol_retention(
    name: str, settings: Settings, db: Database, own: tuple[Rule, ...] = ()
) -> Retention:
    """Pruning of the protocol tables (and the service's own), asking the coordinator which
    transactions are finished."""
    coordinator = component_client(settings, "coordinator", settings.http_timeout_s)
    rules = (*participant_rules(coordinator_outcomes(coordinator)), *own)
    return Retention(name, db, rules, settings.retention_s)


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
        op = ACTION if event_of(routing_key) == PLACED else COMPENSATION
        try:
            outcome = branch.within(conn, op, gtid, part)
        except InvalidInput as err:
            raise PoisonMessage(f"the part of {branch.name}: {err.message}") from err
        report = BranchReport(gtid, branch.name, op, outcome.ok, outcome.reason, outcome.effect)
        enqueue(conn, REPORTED, report.as_json())

    return handle


def db_of(app: Flask) -> Database:
    db: Database = app.extensions["paxmart.db"]
    return db
