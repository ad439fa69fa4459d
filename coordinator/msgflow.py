"""The `msg` mode: reliable messaging with the coordinator as the keeper of outcomes.

1. The initiator prepares the message here (`preparing`, logged durably), commits its
   order and its outgoing event in one local transaction (its outbox), then submits
   (`submitted`). If it dies in between, recovery checks back with it (DTM's
   QueryPrepared): the initiator answers from its barrier, which also blocks a local
   transaction that had not committed yet. Never a guess from time alone.
2. Participants consume the event, apply their part through the barrier and report back
   (their own outbox). The reports are consumed here: all actions done -> `committed`
   and the order is settled confirmed; any business rejection -> `aborting`, every
   branch is told to compensate (null compensation where the action never ran), and when
   all have -> `aborted`, the order settles failed with the reason.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Connection, text

from coordinator.branches import BranchResult
from coordinator.drivers import Driver, Outcome
from coordinator.log import Event, TxnLog
from coordinator.states import (
    ABORTED,
    ABORTING,
    COMMITTED,
    PREPARING,
    SUBMITTED,
    overall_reason,
)
from paxkit.errors import ApiError
from paxkit.messaging import COMPENSATE, SETTLED
from paxkit.metrics import TRANSACTIONS
from paxkit.outbox import enqueue

log = logging.getLogger(__name__)


def order_id_of(txn: dict[str, Any]) -> str | None:
    for branch in txn["branches"]:
        if "order_id" in branch["payload"]:
            return str(branch["payload"]["order_id"])
    return None


class MessageFlow(Driver):
    mode = "msg"

    def run(self, txn: dict[str, Any]) -> Outcome:
        """Preparing the message is all there is to do now; the initiator submits next."""
        return Outcome(txn["gtid"], txn["status"], None)

    def submit(self, gtid: str) -> str:
        """The initiator committed its local transaction: the message is final."""
        with self.log.db.transaction() as conn:
            status = conn.execute(
                text(
                    "UPDATE global_txns SET status = 'submitted', updated_at = now(), "
                    "lease_until = now() + make_interval(secs => :lease) "
                    "WHERE gtid = :gtid AND status = 'preparing' RETURNING status"
                ),
                {"gtid": gtid, "lease": self.txn_timeout_s},
            ).scalar()
            if status is None:
                status = conn.execute(
                    text("SELECT status FROM global_txns WHERE gtid = :gtid"), {"gtid": gtid}
                ).scalar()
        if status is None:
            raise ApiError(f"No transaction {gtid!r}.", code="transaction_not_found", status=404)
        return str(status)

    def recover(self, txn: dict[str, Any], lease_s: float, retry_delay_s: float) -> str:
        if txn["status"] == PREPARING:
            return self._check_back(txn, lease_s)
        if txn["status"] == ABORTING:
            with self.log.db.transaction() as conn:
                enqueue(conn, COMPENSATE, _event_payload(txn))
            return "compensate_again"
        return "wait_for_reports"  # submitted: reports are on their way through the broker

    def _check_back(self, txn: dict[str, Any], lease_s: float) -> str:
        """Ask the initiator whether its local transaction committed (QueryPrepared)."""
        try:
            committed = self.branches.query_prepared(txn["gtid"])
        except ApiError as err:
            log.warning("check-back of %s failed: %s", txn["gtid"], err.message)
            return "check_back_failed"
        if committed:
            self.submit(txn["gtid"])
            return "submitted_by_check_back"
        self.log.decide(txn, ABORTED, "timeout", lease_s)
        TRANSACTIONS.labels("msg", ABORTED).inc()
        self.log.record(txn["gtid"], [Event("order", "check_back", "aborted")])
        return "aborted_by_check_back"

    def on_report(self, conn: Connection, report: dict[str, Any], routing_key: str) -> None:
        """A participant reports an action or compensation (in the consumer's transaction)."""
        gtid, branch, op = report["gtid"], report["branch"], report["op"]
        conn.execute(
            text(
                "INSERT INTO msg_reports (gtid, branch, op, ok, reason) "
                "VALUES (:gtid, :branch, :op, :ok, :reason) ON CONFLICT DO NOTHING"
            ),
            {
                "gtid": gtid,
                "branch": branch,
                "op": op,
                "ok": bool(report["ok"]),
                "reason": report.get("reason"),
            },
        )
        TxnLog.write_events(
            conn,
            gtid,
            [
                Event(
                    branch,
                    op,
                    "ok" if report["ok"] else report.get("reason") or "failed",
                    report.get("effect"),
                )
            ],
        )
        row = conn.execute(
            text(
                "SELECT gtid, mode, status, reason, branches FROM global_txns "
                "WHERE gtid = :gtid FOR UPDATE"
            ),
            {"gtid": gtid},
        ).first()
        if row is None:
            log.error("report for unknown transaction %s", gtid, extra={"gtid": gtid})
            return
        self._advance(conn, dict(row._mapping))

    def _advance(self, conn: Connection, txn: dict[str, Any]) -> None:
        reports = conn.execute(
            text("SELECT branch, op, ok, reason FROM msg_reports WHERE gtid = :gtid"),
            {"gtid": txn["gtid"]},
        ).all()
        names = {b["name"] for b in txn["branches"]}
        if txn["status"] in (PREPARING, SUBMITTED):
            rejected = [r.reason or "aborted" for r in reports if r.op == "action" and not r.ok]
            if rejected:
                txn["reason"] = overall_reason(rejected)
                self._set(conn, txn, ABORTING)
                enqueue(conn, COMPENSATE, _event_payload(txn))
            elif {r.branch for r in reports if r.op == "action" and r.ok} >= names:
                self._set(conn, txn, COMMITTED)
                enqueue(
                    conn,
                    SETTLED,
                    {
                        "gtid": txn["gtid"],
                        "order_id": order_id_of(txn),
                        "status": "confirmed",
                        "reason": None,
                    },
                )
                TRANSACTIONS.labels("msg", COMMITTED).inc()
        if (
            txn["status"] == ABORTING
            and {r.branch for r in reports if r.op == "compensate"} >= names
        ):
            self._set(conn, txn, ABORTED)
            enqueue(
                conn,
                SETTLED,
                {
                    "gtid": txn["gtid"],
                    "order_id": order_id_of(txn),
                    "status": "failed",
                    "reason": txn["reason"],
                },
            )
            TRANSACTIONS.labels("msg", ABORTED).inc()

    def _set(self, conn: Connection, txn: dict[str, Any], status: str) -> None:
        conn.execute(
            text(
                "UPDATE global_txns SET status = :status, reason = :reason, updated_at = now(), "
                "lease_until = now() + make_interval(secs => :lease) WHERE gtid = :gtid"
            ),
            {
                "gtid": txn["gtid"],
                "status": status,
                "reason": txn["reason"],
                "lease": self.txn_timeout_s,
            },
        )
        txn["status"] = status

    def forward(self, txn: dict[str, Any]) -> list[BranchResult]:
        return []

    def complete(self, txn: dict[str, Any], decision: str) -> list[BranchResult]:
        return []


def _event_payload(txn: dict[str, Any]) -> dict[str, Any]:
    """The order's event as participants receive it: each branch's part by name."""
    return {
        "gtid": txn["gtid"],
        "order_id": order_id_of(txn),
        "branches": {b["name"]: b["payload"] for b in txn["branches"]},
    }
