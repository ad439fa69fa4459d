"""The `msg` mode: reliable messaging with the coordinator as the keeper of outcomes.

1. The initiator commits its order and the transaction's events in one local transaction
   (its outbox) and answers at once: the begin (`txn.begun`, every branch's part) for the
   coordinator, and each branch's part (`txn.placed.<branch>`) for that branch only. The
   local commit is the point of no return: there is nothing to check back.
2. The coordinator logs the begin (`submitted`); the participants apply their parts
   through the barrier and report back (their own outbox). Reports may overtake the
   begin: they are kept and drawn on when it arrives (a begin and its reports take turns
   on the transaction's lock, so one of them always sees the other). All actions done
   -> `committed` and the order is settled confirmed; any business rejection ->
   `aborting`, every branch is told to compensate (null compensation where the action
   never ran), and when all have -> `aborted`, the order settles failed with the reason.

Nothing strands: a transaction whose reports are overdue is taken up by recovery, which
sends again exactly what is missing (the part to each branch that never reported, the
compensations not reported), with growing delays. Every branch applies through its
barrier, so a message sent twice has its effect once and is reported again. A begin or a
settlement that never arrives is asked for by the initiator, which knows its order is
still pending: its reconciler sends the events again or settles the order from here
(services/order/reconcile.py).

The decisions are pure functions of the transaction and its reports (`react`,
`missing`); the flow applies them through the log's interface (coordinator/ports.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from coordinator.drivers import Driver, Outcome
from coordinator.log import TxnLog
from coordinator.ports import Branch, BranchClient, BranchResult, TransactionLog, Txn
from coordinator.states import ABORTED, ABORTING, COMMITTED, SUBMITTED, overall_reason
from paxkit.consumer import Handler
from paxkit.faults import Faults
from paxkit.messaging import (
    ACTION,
    BEGUN,
    COMPENSATE,
    COMPENSATION,
    PLACED,
    SETTLED,
    BranchReport,
    Message,
    PoisonMessage,
    branch_messages,
)
from paxkit.metrics import TRANSACTIONS

log = logging.getLogger(__name__)

RESEND_CAP_S = 600.0


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
class Reaction:
    """What a transaction does next: a move of the state machine, and messages to send
    (only if the move happened)."""

    event: str | None = None
    reason: str | None = None
    send: tuple[Message, ...] = ()


def react(txn: Txn, progress: Progress) -> Reaction:
    """The next step once the reports say `progress`."""
    if txn.status == SUBMITTED:
        if progress.rejections:
            reason = overall_reason(list(progress.rejections))
            return Reaction("abort", reason, compensations(txn))
        if progress.applied >= txn.names:
            return Reaction("applied", None, (settlement(txn.at(COMMITTED)),))
    elif txn.status == ABORTING and progress.compensated >= txn.names:
        return Reaction("done", None, (settlement(txn.at(ABORTED)),))
    return Reaction()


def missing(txn: Txn, progress: Progress) -> tuple[Message, ...]:
    """What recovery sends again for a transaction whose reports are overdue."""
    if txn.status == SUBMITTED:
        silent = txn.names - progress.applied - progress.refused
        return branch_events(PLACED, txn, silent)
    if txn.status == ABORTING:
        return branch_events(COMPENSATE, txn, txn.names - progress.compensated)
    return ()


def order_id_of(txn: Txn) -> str | None:
    for branch in txn.branches:
        if "order_id" in branch.payload:
            return str(branch.payload["order_id"])
    return None


def branch_events(event: str, txn: Txn, names: Collection[str]) -> tuple[Message, ...]:
    """`event` for each named branch, each carrying its own part only."""
    parts = {b.name: b.payload for b in txn.branches if b.name in names}
    return tuple(branch_messages(event, txn.gtid, order_id_of(txn), parts))


def compensations(txn: Txn) -> tuple[Message, ...]:
    return branch_events(COMPENSATE, txn, txn.names)


def begun_branches(event: dict[str, Any], known: Callable[[str], bool]) -> list[Branch]:
    """The branches of an initiator's begin; PoisonMessage when it is not one."""
    raw = event.get("branches")
    if not isinstance(raw, list) or not raw:
        raise PoisonMessage("a begin needs its branches")
    if any(not isinstance(b, dict) or not isinstance(b.get("payload"), dict) for b in raw):
        raise PoisonMessage("each branch of a begin needs a payload object")
    names = [b.get("name") for b in raw]
    if any(not isinstance(n, str) or not known(n) for n in names) or len(set(names)) < len(raw):
        raise PoisonMessage("each branch of a begin must name a distinct known participant")
    return [Branch(b["name"], b["payload"]) for b in raw]


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
        """A msg transaction begins from the initiator's event (`on_begun`), not a call."""
        return Outcome(txn.gtid, txn.status, None)

    def on_begun(self, txn_log: TransactionLog, event: dict[str, Any]) -> None:
        """The initiator's begin (in the consumer's unit of work): log it as submitted and
        draw on the reports that overtook it."""
        gtid = event.get("gtid")
        if not isinstance(gtid, str) or not gtid:
            raise PoisonMessage("a begin needs a gtid")
        branches = begun_branches(event, self.branches.known)
        txn_log.hold(gtid)
        txn = txn_log.begin(
            gtid, self.mode, branches, self.resend_s, durable=False, status=SUBMITTED
        )
        if txn is None:
            return  # a copy of a begin already logged
        self._apply(txn_log, txn, react(txn, Progress.of(txn_log.reports(gtid))))

    def on_report(self, txn_log: TransactionLog, report: BranchReport) -> None:
        """A branch reports (in the consumer's unit of work, `txn_log`)."""
        txn_log.hold(report.gtid)
        if not txn_log.add_report(report):
            return  # heard before: its consequences were drawn then
        txn = txn_log.lock(report.gtid)
        if txn is None:
            log.info(
                "report for %s before its begin: kept", report.gtid, extra={"gtid": report.gtid}
            )
            return
        self._apply(txn_log, txn, react(txn, Progress.of(txn_log.reports(txn.gtid))))

    def recover(self, txn: Txn, lease_s: float, retry_delay_s: float) -> str:
        """The reports are overdue: draw what the reports already say (a move that did not
        happen with them), or send again what is missing, later again if need be."""
        progress = Progress.of(self.log.reports(txn.gtid))
        reaction = react(txn, progress)
        if reaction.event is not None:
            self._apply(self.log, txn, reaction)
            return "advanced"
        again = missing(txn, progress)
        for message in again:
            self.log.publish(message.routing_key, message.payload)
        self.log.postpone(txn.gtid, self.resend_delay_s(txn.recovery_attempts))
        return f"resent_{again[0].routing_key.rsplit('.', 1)[0]}" if again else "wait_for_reports"

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

    def forward(self, txn: Txn) -> list[BranchResult]:
        return []

    def complete(self, txn: Txn, decision: str) -> list[BranchResult]:
        return []


def report_handler(flow: MessageFlow, txn_log: TxnLog) -> Handler:
    """The consumer's handler of branch reports: each in the consumer's transaction."""

    def handle(conn: Connection, body: dict[str, Any], routing_key: str) -> None:
        if routing_key == BEGUN:
            flow.on_begun(txn_log.bound(conn), body)
        else:
            flow.on_report(txn_log.bound(conn), BranchReport.from_json(body))

    return handle
