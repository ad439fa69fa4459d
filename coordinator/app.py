"""The coordinator: the transaction manager and its log, recovery, and the audit."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify, request
from prometheus_client.core import GaugeMetricFamily, Metric

from coordinator.audit import Auditor
from coordinator.branches import Branches
from coordinator.drivers import DRIVERS, Driver
from coordinator.log import TxnLog
from coordinator.msgflow import MessageFlow, report_handler
from coordinator.ports import Branch, Txn
from coordinator.recovery import Recovery
from coordinator.states import STATUSES
from paxkit.app import create_base_app, make_faults
from paxkit.background import Loop
from paxkit.config import DATABASES, Settings, load_settings
from paxkit.db import Database, make_engine
from paxkit.deadletters import DeadLetterAdmin, DeadLetters, admin_blueprint, dead_letters_probe
from paxkit.errors import ApiError, InvalidInput, NotFound
from paxkit.http import ServiceClient
from paxkit.messaging import REPORTS_QUEUE, Topology, queue_depths
from paxkit.metrics import outbox_probe
from paxkit.requests_json import json_body
from paxkit.runtime import dead_letter_store, start_messaging
from paxkit.validation import validate_gtid

MAX_LIST = 500

ALL_DRIVERS: tuple[type[Driver], ...] = (*DRIVERS, MessageFlow)

bp = Blueprint("coordinator", __name__)


def _ext(name: str) -> Any:
    return current_app.extensions[f"paxmart.{name}"]


def _parse_transaction(body: dict[str, Any], branches: Branches) -> dict[str, Any]:
    gtid = validate_gtid(body.get("gtid"))
    modes = tuple(d.mode for d in ALL_DRIVERS)
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
    return jsonify(driver.run(txn).as_json())


@bp.post("/transactions/<gtid>/resolve")
def resolve_transaction(gtid: str) -> Any:
    """The initiator's check-back: the outcome, or `aborted` for a gtid never begun."""
    mode = json_body().get("mode", "2pc")
    if mode not in _ext("drivers"):
        raise InvalidInput("mode", "unknown mode")
    return jsonify(_txn_json(_ext("log").resolve(validate_gtid(gtid), mode)))


@bp.post("/transactions/<gtid>/submit")
def submit_transaction(gtid: str) -> Any:
    """msg mode: the initiator's local transaction committed; its message is final."""
    status = _ext("drivers")["msg"].submit(validate_gtid(gtid))
    return jsonify({"gtid": gtid, "status": status})


@bp.get("/transactions/<gtid>")
def get_transaction(gtid: str) -> Any:
    txn = _ext("log").get(gtid)
    if txn is None:
        raise NotFound(f"No transaction {gtid!r}.", code="transaction_not_found")
    return jsonify(_txn_json(txn))


@bp.get("/admin/transactions")
def list_transactions() -> Any:
    status = request.args.get("status") or None
    if status is not None and status not in STATUSES:
        raise InvalidInput("status", f"status must be one of {', '.join(STATUSES)}")
    limit = request.args.get("limit", "50")
    if not limit.isdigit() or not 1 <= int(limit) <= MAX_LIST:
        raise InvalidInput("limit", f"limit must be an integer from 1 to {MAX_LIST}")
    rows = _ext("log").recent(status, int(limit))
    return jsonify({"items": [_txn_json(r) for r in rows]})


@bp.get("/admin/transactions/<gtid>")
def transaction_detail(gtid: str) -> Any:
    txn = _ext("log").get(gtid)
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
        depths = queue_depths(settings.amqp_url, Topology(settings.mq_namespace))
        for queue, depth in depths.items():
            gauge.add_metric([queue], depth)
        return [gauge]

    return probe


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or load_settings()
    app = create_base_app("coordinator", settings)
    dbs = {name: Database(make_engine(settings.db_urls[name], pool_size=4)) for name in DATABASES}
    dbs["coordinator"] = Database(make_engine(settings.db_urls["coordinator"], pool_size=32))
    txn_log = TxnLog(dbs["coordinator"])
    branches = Branches(settings)
    pool = ThreadPoolExecutor(max_workers=64, thread_name_prefix="branch")
    faults = make_faults("coordinator", settings)
    common = (txn_log, branches, faults, pool, settings.txn_timeout_s, settings.recovery_interval_s)
    drivers = {d.mode: d(*common) for d in DRIVERS}
    msg = MessageFlow(*common, resend_s=settings.msg_resend_s)
    drivers[msg.mode] = msg
    recovery = Recovery(
        txn_log,
        branches,
        drivers,
        settings.recovery_horizon_s,
        lease_s=settings.txn_timeout_s,
        base_delay_s=settings.recovery_interval_s,
    )
    app.extensions.update(
        {
            "paxmart.log": txn_log,
            "paxmart.branches": branches,
            "paxmart.drivers": drivers,
            "paxmart.recovery": recovery,
            "paxmart.auditor": Auditor(dbs, settings.recovery_horizon_s),
        }
    )
    dead_letters = dead_letter_store(settings, dbs["coordinator"])
    app.extensions["paxmart.gauges"] = [
        outbox_probe("coordinator", dbs["coordinator"]),
        backlog_probe(txn_log),
        queue_probe(settings),
        dead_letters_probe("coordinator", dead_letters),
    ]
    app.register_blueprint(bp)
    app.register_blueprint(admin_blueprint(dead_letter_admin(settings, dead_letters)))
    if settings.background_enabled:
        app.extensions["paxmart.loops"] = [
            Loop("coordinator-recovery", recovery.run_once, settings.recovery_interval_s).start(),
            *start_messaging(
                "coordinator",
                settings,
                dbs["coordinator"],
                faults,
                REPORTS_QUEUE,
                report_handler(msg, txn_log),
            ),
        ]
    return app


def dead_letter_admin(settings: Settings, own: DeadLetters) -> DeadLetterAdmin:
    """The coordinator's own dead letters, and every other consumer's, asked over HTTP."""
    others = {
        name: ServiceClient(name, settings.urls[name], settings.http_timeout_s)
        for name in settings.message_consumers
        if name != "coordinator"
    }
    return DeadLetterAdmin("coordinator", own, others)
