"""The coordinator: the transaction manager and its log, recovery, and the audit."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify, request
from prometheus_client.core import GaugeMetricFamily, Metric

from coordinator.audit import Auditor
from coordinator.branches import Branches
from coordinator.drivers import DRIVERS, Driver
from coordinator.log import RETENTION_RULES, TxnLog
from coordinator.msgflow import MessageFlow, report_handler
from coordinator.paxoscommit import OutcomeUnknown, PaxosCommit
from coordinator.ports import Branch, Txn, TxnFilter
from coordinator.recovery import Recovery
from coordinator.states import FINAL, STATUSES
from paxkit.acceptors import ACCEPTOR_RETENTION, Acceptors, sql_acceptors
from paxkit.app import make_faults
from paxkit.background import Loop
from paxkit.component import Background, Component, ComponentSpec
from paxkit.config import Settings, load_settings
from paxkit.db import Database, make_engine
from paxkit.deadletters import DeadLetterAdmin, DeadLetters, admin_blueprint, dead_letters_probe
from paxkit.errors import ApiError, InvalidInput, NotFound
from paxkit.http import ServiceClient, component_client
from paxkit.messaging import REPORTS_QUEUE, Topology, queue_depths
from paxkit.metrics import outbox_probe
from paxkit.requests_json import json_body
from paxkit.retention import UNKNOWN, Retention
from paxkit.runtime import dead_letter_store, messaging_work
from paxkit.schema import MESSAGING_SQL
from paxkit.threepc import MODE as THREEPC
from paxkit.threepc import threepc_refused
from paxkit.validation import GTID_PATTERN, validate_gtid, validate_limit
from paxkit.web import create_app as web_app

MAX_LIST = 500
MAX_STATUSES = 1000
MAX_AGE_S = 10 * 365 * 86400

# The modes a transaction is begun in through POST /transactions (msg begins from its event).
SYNC_DRIVERS: tuple[type[Driver], ...] = (*DRIVERS, PaxosCommit)
ALL_DRIVERS: tuple[type[Driver], ...] = (*SYNC_DRIVERS, MessageFlow)

bp = Blueprint("coordinator", __name__)


def _ext(name: str) -> Any:
    return current_app.extensions[f"paxmart.{name}"]


def _parse_transaction(body: dict[str, Any], branches: Branches) -> dict[str, Any]:
    gtid = validate_gtid(body.get("gtid"))
    modes = tuple(d.mode for d in SYNC_DRIVERS)
    if body.get("mode") not in modes:
        raise InvalidInput(
            "mode", f"mode must be one of {', '.join(modes)}", code="unsupported_mode"
        )
    raw = body.get("branches")
    if not isinstance(raw, list) or not raw:
        raise InvalidInput("branches", "branches must be a non-empty list")
    names = [b.get("name") if isinstance(b, dict) else None for b in raw]
    if any(not isinstance(n, str) or not branches.known(n) for n in names) or len(
        set(names)
    ) != len(names):
        raise InvalidInput("branches", "each branch must name a distinct known participant")
    if any(not isinstance(b.get("payload"), dict) for b in raw):
        raise InvalidInput("branches", "each branch needs a payload object")
    return {
        "gtid": gtid,
        "mode": body["mode"],
        "branches": [Branch(b["name"], b["payload"]) for b in raw],
    }


@bp.post("/transactions")
def run_transaction() -> Any:
    """Run a global transaction to its outcome (synchronously, within the global timeout)."""
    spec = _parse_transaction(json_body(), _ext("branches"))
    settings: Settings = _ext("settings")
    if spec["mode"] == THREEPC and not settings.threepc_mode:
        raise threepc_refused()
    driver = _ext("drivers")[spec["mode"]]
    txn = _ext("log").begin(
        spec["gtid"],
        spec["mode"],
        spec["branches"],
        settings.txn_timeout_s,
        durable=driver.durable_begin,
    )
    if txn is None:
        raise ApiError(
            f"transaction {spec['gtid']} already exists", code="duplicate_gtid", status=409
        )
    outcome = driver.run(txn)
    if outcome.status not in FINAL:
        raise OutcomeUnknown(f"transaction {txn.gtid} is not decided yet; recovery finishes it")
    return jsonify(outcome.as_json())


@bp.post("/transactions/<gtid>/resolve")
def resolve_transaction(gtid: str) -> Any:
    """The initiator's check-back: the outcome, or `aborted` for a gtid never begun (404
    for a msg gtid not logged yet: its begin may still be on its way)."""
    mode = json_body().get("mode", "2pc")
    if not isinstance(mode, str) or mode not in _ext("drivers"):
        raise InvalidInput("mode", f"mode must be one of {', '.join(_ext('drivers'))}")
    txn = _ext("drivers")[mode].resolve(validate_gtid(gtid))
    if txn is None:
        raise NotFound(f"No transaction {gtid!r} yet.", code="transaction_not_found")
    return jsonify(_txn_json(txn))


@bp.post("/transactions/statuses")
def transaction_statuses() -> Any:
    """Which of these transactions are finished, and since when (participants' retention).

    A gtid the log does not hold answers `unknown`: the log keeps every transaction it
    began, so that is one it never logged (paxkit/retention.py relies on this)."""
    gtids = json_body().get("gtids")
    if not isinstance(gtids, list) or not 1 <= len(gtids) <= MAX_STATUSES:
        raise InvalidInput("gtids", f"gtids must be a list of 1 to {MAX_STATUSES} gtids")
    wanted = [validate_gtid(g) for g in gtids]
    known = _ext("log").outcomes(wanted)
    unknown = {"status": UNKNOWN, "final_for_s": None}
    return jsonify({"statuses": {g: known.get(g, unknown) for g in wanted}})


@bp.get("/transactions/<gtid>")
def get_transaction(gtid: str) -> Any:
    txn = _known_transaction(gtid)
    if txn is None:
        raise NotFound(f"No transaction {gtid!r}.", code="transaction_not_found")
    return jsonify(_txn_json(txn))


@bp.get("/admin/transactions")
def list_transactions() -> Any:
    """The newest transactions, optionally of one status and mode, within an age range."""
    limit = validate_limit(request.args.get("limit"), 50, MAX_LIST)
    rows = _ext("log").recent(_txn_filter(), limit)
    return jsonify({"items": [_txn_json(r) for r in rows]})


def _txn_filter() -> TxnFilter:
    status = request.args.get("status") or None
    if status is not None and status not in STATUSES:
        raise InvalidInput("status", f"status must be one of {', '.join(STATUSES)}")
    mode = request.args.get("mode") or None
    if mode is not None and mode not in _ext("drivers"):
        raise InvalidInput("mode", f"mode must be one of {', '.join(_ext('drivers'))}")
    return TxnFilter(status, mode, _age_arg("min_age_s"), _age_arg("max_age_s"))


def _age_arg(name: str) -> float | None:
    raw = request.args.get(name) or None
    if raw is None:
        return None
    try:
        age = float(raw)
    except ValueError:
        age = -1.0
    if not 0 <= age <= MAX_AGE_S:
        raise InvalidInput(name, f"{name} must be a number of seconds from 0 to {MAX_AGE_S}")
    return age


@bp.get("/admin/transactions/<gtid>")
def transaction_detail(gtid: str) -> Any:
    txn = _known_transaction(gtid)
    if txn is None:
        raise NotFound(f"No transaction {gtid!r}.", code="transaction_not_found")
    timeline = [{**e, "at": e["at"].isoformat()} for e in _ext("log").events(gtid)]
    return jsonify({**_txn_json(txn), "timeline": timeline})


@bp.get("/admin/audit")
def audit() -> Any:
    return jsonify(_ext("auditor").run())


@bp.post("/admin/recover")
def recover_now() -> Any:
    """Run one recovery pass now (operators, tests); the loop runs it periodically anyway."""
    return jsonify(_ext("recovery").run_once())


def _known_transaction(gtid: str) -> Txn | None:
    """The logged transaction; a gtid of the wrong form is looked up nowhere."""
    txn: Txn | None = _ext("log").get(gtid) if GTID_PATTERN.match(gtid) else None
    return txn


def _txn_json(txn: Txn) -> dict[str, Any]:
    return {
        "gtid": txn.gtid,
        "mode": txn.mode,
        "status": txn.status,
        "reason": txn.reason,
        "branches": [{"name": b.name} for b in txn.branches],
        "recovery_attempts": txn.recovery_attempts,
        "created_at": txn.created_at.isoformat(),
        "updated_at": txn.updated_at.isoformat(),
    }


def backlog_probe(txn_log: TxnLog) -> Callable[[], list[Metric]]:
    """Unfinished transactions by status: what recovery still has to do."""

    def probe() -> list[Metric]:
        gauge = GaugeMetricFamily(
            "paxmart_transactions_unfinished", "Transactions not finished yet", labels=["status"]
        )
        for status, count in txn_log.unfinished_counts().items():
            gauge.add_metric([status], count)
        return [gauge]

    return probe


def queue_probe(settings: Settings) -> Callable[[], list[Metric]]:
    """Depth of every queue (consumer lag) and of every dead-letter queue."""

    def probe() -> list[Metric]:
        gauge = GaugeMetricFamily("paxmart_queue_messages", "Messages waiting", labels=["queue"])
        depths = queue_depths(settings.amqp_url, Topology.of(settings))
        for queue, depth in depths.items():
            gauge.add_metric([queue], depth)
        return [gauge]

    return probe


class CoordinatorComponent(Component):
    """The coordinator's objects: its log, the branch client, the drivers, recovery."""

    def __init__(self, settings: Settings) -> None:
        super().__init__("coordinator", settings)
        self.db = Database(make_engine(settings.db_urls["coordinator"], pool_size=32))
        self.log = TxnLog(self.db)
        self.branches = Branches(settings)
        self.faults = make_faults("coordinator", settings)
        pool = ThreadPoolExecutor(max_workers=64, thread_name_prefix="branch")
        common = (
            self.log,
            self.branches,
            self.faults,
            pool,
            settings.txn_timeout_s,
            settings.recovery_interval_s,
        )
        self.drivers: dict[str, Driver] = {d.mode: d(*common) for d in DRIVERS}
        self.sql_acceptors = sql_acceptors(settings)
        self.acceptors = Acceptors(
            self.sql_acceptors,
            # A call to every acceptor at once from each of the web process's threads.
            ThreadPoolExecutor(
                max_workers=32 * len(self.sql_acceptors), thread_name_prefix="acceptor"
            ),
            settings.acceptor_timeout_s,
            self.faults,
        )
        self.paxos = PaxosCommit(*common, acceptors=self.acceptors)
        self.drivers[self.paxos.mode] = self.paxos
        self.msg = MessageFlow(*common, resend_s=settings.msg_resend_s)
        self.drivers[self.msg.mode] = self.msg
        self.recovery = Recovery(
            self.log,
            self.branches,
            self.drivers,
            settings.recovery_horizon_s,
            lease_s=settings.txn_timeout_s,
            base_delay_s=settings.recovery_interval_s,
        )
        self.auditor = Auditor(
            self.log,
            service_clients(settings, settings.participants),
            service_clients(settings, settings.initiators),
            settings.recovery_horizon_s,
        )
        self.retention = Retention("coordinator", self.db, RETENTION_RULES, settings.retention_s)
        self.acceptor_retention = [
            Retention(a.name, a.db, ACCEPTOR_RETENTION, settings.retention_s)
            for a in self.sql_acceptors
        ]
        self.dead_letters = dead_letter_store(settings, self.db)

    def register(self, app: Flask) -> None:
        app.extensions.update(
            {
                "paxmart.log": self.log,
                "paxmart.branches": self.branches,
                "paxmart.drivers": self.drivers,
                "paxmart.recovery": self.recovery,
                "paxmart.auditor": self.auditor,
                "paxmart.retention": self.retention,
                "paxmart.gauges": [
                    outbox_probe("coordinator", self.db),
                    backlog_probe(self.log),
                    queue_probe(self.settings),
                    self.retention.probe(),
                    dead_letters_probe("coordinator", self.dead_letters),
                ],
            }
        )
        app.register_blueprint(bp)
        app.register_blueprint(admin_blueprint(dead_letter_admin(self.settings, self.dead_letters)))

    def background(self) -> list[Background]:
        return [
            Loop("coordinator-recovery", self.recovery.run_once, self.settings.recovery_interval_s),
            Loop(
                "coordinator-retention", self.retention.run_once, self.settings.retention_interval_s
            ),
            Loop("coordinator-paxos-sweep", self.paxos.sweep, self.settings.recovery_interval_s),
            Loop(
                "coordinator-acceptor-retention",
                lambda: [r.run_once() for r in self.acceptor_retention],
                self.settings.retention_interval_s,
            ),
            *messaging_work(
                "coordinator",
                self.settings,
                self.db,
                self.faults,
                REPORTS_QUEUE,
                report_handler(self.msg, self.log),
            ),
        ]

    def close(self) -> None:
        self.db.dispose()
        for acceptor in self.sql_acceptors:
            acceptor.db.dispose()


def service_clients(settings: Settings, names: Iterable[str]) -> dict[str, ServiceClient]:
    return {name: component_client(settings, name, settings.http_timeout_s) for name in names}


COMPONENT = ComponentSpec(
    "coordinator",
    CoordinatorComponent,
    (Path(__file__).resolve().parent / "migrations", MESSAGING_SQL),
)


def create_app(settings: Settings | None = None) -> Flask:
    return web_app(CoordinatorComponent(settings or load_settings()))


def dead_letter_admin(settings: Settings, own: DeadLetters) -> DeadLetterAdmin:
    """The coordinator's own dead letters, and every other consumer's, asked over HTTP."""
    others = service_clients(
        settings, (n for n in settings.message_consumers if n != "coordinator")
    )
    return DeadLetterAdmin("coordinator", own, others)
