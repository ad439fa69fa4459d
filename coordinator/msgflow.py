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

Nothing strands: a transaction whose reports are overdue is taken up by recovery, which
sends again exactly what is missing (the event to the branches that never reported, the
compensations not reported), with growing delays. Every branch applies through its
barrier, so a message sent twice has its effect once and is reported again. A settlement
that never arrives is asked for by the initiator, which knows its order is still
pending: its reconciler resolves the transaction here (services/order/reconcile.py).

The decisions are pure functions of the transaction and its reports (`react`,
`missing`); the flow applies them through the log's interface (coordinator/ports.py).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from coordinator.drivers import Driver, Outcome
from coordinator.log import TxnLog
from coordinator.ports import BranchClient, BranchResult, Event, TransactionLog, Txn
from coordinator.states import (
    ABORTED,
    ABORTING,
    COMMITTED,
    PREPARING,
    SUBMITTED,
    overall_reason,
)
from paxkit.consumer import Handler
from paxkit.errors import ApiError, NotFound
from paxkit.faults import Faults
from paxkit.messaging import ACTION, COMPENSATE, COMPENSATION, PLACED, SETTLED, BranchReport
from paxkit.metrics import TRANSACTIONS

log = logging.getLogger(__name__)

RESEND_CAP_S = 600.0
INITIATOR = "order"


@dataclass(frozen=True)
class Progress:
    """What the reports of one msg transaction say so far."""

    applied: frozenset[str] = frozenset()  # branches whose action succeeded
    refused: frozenset[str] = frozenset()  # branches whose action was rejected
    rejections: tuple[str, ...] = ()  # the reasons they gave
    compensated: frozenset[str] = frozenset()

    @classmethod
    def of(cls, reports: Iterable[BranchReport]) -> Progress:
        reports = list(reports)
        actions = [r for r in reports if r.op == ACTION]
        return cls(
            applied=frozenset(r.branch for r in actions if r.ok),
            refused=frozenset(r.branch for r in actions if not r.ok),
            rejections=tuple(r.reason or "aborted" for r in actions if not r.ok),
            compensated=frozenset(r.branch for r in reports if r.op == COMPENSATION),
        )


@dataclass(frozen=True)
class Message:
    routing_key: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class Reaction:
    """What a transaction does next: a move of the state machine, and messages to send
    (only if the move happened)."""

    event: str | None = None
    reason: str | None = None
    send: tuple[Message, ...] = ()


def react(txn: Txn, progress: Progress) -> Reaction:
    """The next step once the reports say `progress`."""
    if txn.status in (PREPARING, SUBMITTED):
        if progress.rejections:
            reason = overall_reason(list(progress.rejections))
            return Reaction("abort", reason, (compensations(txn),))
        if progress.applied >= txn.names:
            return Reaction("applied", None, (settlement(txn.at(COMMITTED)),))
    elif txn.status == ABORTING and progress.compensated >= txn.names:
        return Reaction("done", None, (settlement(txn.at(ABORTED)),))
    return Reaction()


def missing(txn: Txn, progress: Progress) -> tuple[Message, ...]:
    """What recovery sends again for a transaction whose reports are overdue."""
    if txn.status == SUBMITTED:
        silent = txn.names - progress.applied - progress.refused
        return (order_event(PLACED, txn, silent),) if silent else ()
    if txn.status == ABORTING:
        uncompensated = txn.names - progress.compensated
        return (order_event(COMPENSATE, txn, uncompensated),) if uncompensated else ()
    return ()


def order_id_of(txn: Txn) -> str | None:
    for branch in txn.branches:
        if "order_id" in branch.payload:
            return str(branch.payload["order_id"])
    return None


def order_event(routing_key: str, txn: Txn, names: Collection[str] | None = None) -> Message:
    """The order's event as participants receive it: each branch's part by name (only
    the named branches' when sent again)."""
    parts = {b.name: b.payload for b in txn.branches if names is None or b.name in names}
    return Message(routing_key, {"gtid": txn.gtid, "order_id": order_id_of(txn), "branches": parts})


def compensations(txn: Txn) -> Message:
    return order_event(COMPENSATE, txn)


def settlement(txn: Txn) -> Message:
    """The order's outcome, for the initiator to settle it."""
    confirmed = txn.status == COMMITTED
    return Message(
        SETTLED,
        {
            "gtid": txn.gtid,
            "order_id": order_id_of(txn),
            "status": "confirmed" if confirmed else "failed",
            "reason": None if confirmed else txn.reason,
        },
    )


class MessageFlow(Driver):
    mode = "msg"

    def __init__(
        self,
        txn_log: TransactionLog,
        branches: BranchClient,
        faults: Faults,
        pool: Executor,
        txn_timeout_s: float,
        retry_delay_s: float,
        resend_s: float,
    ) -> None:
        super().__init__(txn_log, branches, faults, pool, txn_timeout_s, retry_delay_s)
        self.resend_s = resend_s

    def run(self, txn: Txn) -> Outcome:
        """Preparing the message is all there is to do now; the initiator submits next."""
        return Outcome(txn.gtid, txn.status, None)

    def submit(self, gtid: str) -> str:
        """The initiator committed its local transaction: the message is final."""
        status = self.log.move(gtid, PREPARING, "submit", lease_s=self.resend_s)
        if status is not None:
            return status
        txn = self.log.get(gtid)
        if txn is None:
            raise NotFound(f"No transaction {gtid!r}.", code="transaction_not_found")
        return txn.status

    def on_report(self, txn_log: TransactionLog, report: BranchReport) -> None:
        """A branch reports (in the consumer's unit of work, `txn_log`)."""
        if not txn_log.add_report(report):
            return  # heard before: its consequences were drawn then
        txn = txn_log.lock(report.gtid)
        if txn is None:
            log.error("report for unknown transaction %s", report.gtid, extra={"gtid": report.gtid})
            return
        self._apply(txn_log, txn, react(txn, Progress.of(txn_log.reports(txn.gtid))))

    def recover(self, txn: Txn, lease_s: float, retry_delay_s: float) -> str:
        """The reports are overdue: check back with the initiator (preparing), draw what the
        reports already say (a move that did not happen with them), or send again what is
        missing, later again if need be."""
        if txn.status == PREPARING:
            return self._check_back(txn)
        progress = Progress.of(self.log.reports(txn.gtid))
        reaction = react(txn, progress)
        if reaction.event is not None:
            self._apply(self.log, txn, reaction)
            return "advanced"
        again = missing(txn, progress)
        for message in again:
            self.log.publish(message.routing_key, message.payload)
        self.log.postpone(txn.gtid, self.resend_delay_s(txn.recovery_attempts))
        return f"resent_{again[0].routing_key}" if again else "wait_for_reports"

    def resend_delay_s(self, attempts: int) -> float:
        """Doubling from `resend_s` with every try, up to RESEND_CAP_S."""
        return float(min(RESEND_CAP_S, self.resend_s * 2 ** min(max(attempts - 1, 0), 10)))

    def _apply(self, txn_log: TransactionLog, txn: Txn, reaction: Reaction) -> None:
        if reaction.event is not None:
            status = txn_log.move(
                txn.gtid, txn.status, reaction.event, reason=reaction.reason, lease_s=self.resend_s
            )
            if status is None:
                return  # someone else moved it first: they sent what goes with it
            if status in (COMMITTED, ABORTED):
                TRANSACTIONS.labels(self.mode, status).inc()
        for message in reaction.send:
            txn_log.publish(message.routing_key, message.payload)

    def _check_back(self, txn: Txn) -> str:
        """Ask the initiator whether its local transaction committed (QueryPrepared)."""
        try:
            committed = self.branches.query_prepared(txn.gtid)
        except ApiError as err:
            log.warning("check-back of %s failed: %s", txn.gtid, err.message)
            return "check_back_failed"
        if committed:
            self.submit(txn.gtid)
            return "submitted_by_check_back"
        withdrawn = self.log.move(
            txn.gtid,
            PREPARING,
            "withdraw",
            reason="timeout",
            events=[Event(INITIATOR, "check_back", "aborted")],
        )
        if withdrawn is not None:
            TRANSACTIONS.labels(self.mode, ABORTED).inc()
        return "aborted_by_check_back"

    def forward(self, txn: Txn) -> list[BranchResult]:
        return []

    def complete(self, txn: Txn, decision: str) -> list[BranchResult]:
        return []


def report_handler(flow: MessageFlow, txn_log: TxnLog) -> Handler:
    """The consumer's handler of branch reports: each in the consumer's transaction."""

    def handle(conn: Connection, body: dict[str, Any], routing_key: str) -> None:
        flow.on_report(txn_log.bound(conn), BranchReport.from_json(body))

    return handle
