"""The msg mode's state machine against in-memory fakes: the initiator's begin logs it,
reports move it (even those that overtake the begin), recovery sends again exactly what
is missing, each branch hearing only of its own part."""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor

import pytest

from coordinator.msgflow import MessageFlow, Progress, missing, react
from coordinator.ports import Branch, Txn
from coordinator.recovery import Recovery
from paxkit.faults import Faults
from paxkit.messaging import BranchReport, PoisonMessage, transaction_messages
from tests.unit.fakes import FakeBranches, FakeTxnLog

RESEND_S = 60.0
TIMEOUT_S = 4.0
NAMES = ("inventory", "coupon", "redpacket")
_ids = itertools.count(1)


@pytest.fixture
def flow(log: FakeTxnLog, branches: FakeBranches) -> MessageFlow:
    pool = ThreadPoolExecutor(max_workers=1)
    faults = Faults("coordinator", None)
    return MessageFlow(log, branches, faults, pool, TIMEOUT_S, 0.5, resend_s=RESEND_S)


def begin_event(names: tuple[str, ...] = NAMES) -> dict:
    """The initiator's txn.begun, as the order service sends it."""
    n = next(_ids)
    parts = {name: {"order_id": f"ord-{n}", "part": name} for name in names}
    begun = transaction_messages(f"gtx-msg-{n}", f"ord-{n}", parts)[0]
    assert begun.routing_key == "txn.begun"
    return begun.payload


def submitted(log: FakeTxnLog, flow: MessageFlow, names: tuple[str, ...] = NAMES) -> Txn:
    event = begin_event(names)
    flow.on_begun(log, event)
    txn = log.get(event["gtid"])
    assert txn is not None and txn.status == "submitted"
    return txn


def action(txn: Txn, branch: str, ok: bool = True, reason: str | None = None) -> BranchReport:
    return BranchReport(txn.gtid, branch, "action", ok, reason, "applied" if ok else "rejected")


def compensated(txn: Txn, branch: str) -> BranchReport:
    return BranchReport(txn.gtid, branch, "compensate", True, None, "applied")


def recover(log: FakeTxnLog, branches: FakeBranches, flow: MessageFlow) -> int:
    recovery = Recovery(log, branches, {"msg": flow}, 10, lease_s=TIMEOUT_S, base_delay_s=0.5)
    return recovery.finish_in_doubt()


def test_a_begin_logs_the_transaction_once(log, flow):
    event = begin_event()
    flow.on_begun(log, event)
    flow.on_begun(log, event)  # a copy: nothing changes
    txn = log.get(event["gtid"])
    assert txn is not None
    assert (txn.status, txn.names) == ("submitted", frozenset(NAMES))
    assert log.lease_left(txn.gtid) == RESEND_S  # reports may take that long in a burst
    assert log.sent == []


@pytest.mark.parametrize(
    "event",
    [
        {"branches": [{"name": "inventory", "payload": {}}]},
        {"gtid": "gtx-1", "branches": []},
        {"gtid": "gtx-1", "branches": [{"name": "nobody", "payload": {}}]},
        {"gtid": "gtx-1", "branches": [{"name": "inventory", "payload": "x"}]},
        {"gtid": "gtx-1", "branches": [{"name": "inventory", "payload": {}}] * 2},
    ],
)
def test_a_malformed_begin_is_poison(log, flow, event):
    with pytest.raises(PoisonMessage):
        flow.on_begun(log, event)
    assert log.txns == {}


def test_every_action_applied_commits_and_settles_the_order_confirmed(log, flow):
    txn = submitted(log, flow)
    for name in NAMES[:-1]:
        flow.on_report(log, action(txn, name))
    assert (log.status(txn.gtid), log.sent) == ("submitted", [])

    flow.on_report(log, action(txn, NAMES[-1]))

    assert log.status(txn.gtid) == "committed"
    order_id = txn.branches[0].payload["order_id"]
    assert log.sent_keys() == ["txn.settled"]
    assert log.sent[0].payload == {
        "gtid": txn.gtid,
        "order_id": order_id,
        "status": "confirmed",
        "reason": None,
    }


def test_a_duplicate_report_sends_nothing_twice(log, flow):
    txn = submitted(log, flow, ("inventory",))
    flow.on_report(log, action(txn, "inventory"))
    flow.on_report(log, action(txn, "inventory"))
    assert log.sent_keys() == ["txn.settled"]
    assert [e.op for e in log.timeline[txn.gtid]] == ["action", "action"]  # both on record


def test_a_rejection_compensates_everyone_then_settles_failed(log, flow):
    txn = submitted(log, flow)
    flow.on_report(log, action(txn, "inventory"))
    flow.on_report(log, action(txn, "redpacket", False, "insufficient_balance"))
    assert (log.status(txn.gtid), log.txns[txn.gtid].reason) == ("aborting", "insufficient_balance")
    compensations = [f"txn.compensate.{name}" for name in sorted(NAMES)]
    assert log.sent_keys() == compensations
    assert [set(m.payload["branches"]) for m in log.sent] == [{n} for n in sorted(NAMES)]

    flow.on_report(log, action(txn, "coupon"))  # late, after the decision: changes nothing
    for name in NAMES[:-1]:
        flow.on_report(log, compensated(txn, name))
    assert (log.status(txn.gtid), log.sent_keys()) == ("aborting", compensations)

    flow.on_report(log, compensated(txn, NAMES[-1]))

    assert log.status(txn.gtid) == "aborted"
    assert log.sent_keys() == [*compensations, "txn.settled"]
    assert log.sent[-1].payload["status"] == "failed"
    assert log.sent[-1].payload["reason"] == "insufficient_balance"


def test_reports_that_overtake_the_begin_decide_it_when_it_arrives(log, flow):
    event = begin_event(("inventory", "coupon"))
    early = Txn(event["gtid"], "msg", "submitted", branches=())
    flow.on_report(log, action(early, "inventory"))
    flow.on_report(log, action(early, "coupon"))
    assert (log.txns, log.sent) == ({}, [])  # kept, nothing decided without the begin

    flow.on_begun(log, event)

    assert log.status(event["gtid"]) == "committed"
    assert log.sent_keys() == ["txn.settled"]


def test_overdue_reports_make_recovery_send_the_event_again_to_the_silent_only(log, flow, branches):
    txn = submitted(log, flow)
    flow.on_report(log, action(txn, "inventory"))
    log.now += RESEND_S - 1
    assert recover(log, branches, flow) == 0  # not overdue yet
    log.now += 2

    assert recover(log, branches, flow) == 1

    again = ["txn.placed.coupon", "txn.placed.redpacket"]
    assert log.sent_keys() == again
    assert log.sent[0].payload["branches"] == {"coupon": txn.branches[1].payload}
    assert log.sent[0].payload["gtid"] == txn.gtid
    assert log.lease_left(txn.gtid) == RESEND_S
    log.now += RESEND_S + 1
    recover(log, branches, flow)
    assert log.sent_keys() == again * 2
    assert log.lease_left(txn.gtid) == 2 * RESEND_S  # doubling

    flow.on_report(log, action(txn, "coupon"))
    flow.on_report(log, action(txn, "redpacket"))
    assert log.status(txn.gtid) == "committed"


def test_recovery_sends_missing_compensations_only(log, flow, branches):
    txn = submitted(log, flow)
    flow.on_report(log, action(txn, "inventory", False, "out_of_stock"))
    flow.on_report(log, compensated(txn, "inventory"))
    log.sent.clear()
    log.now += RESEND_S + 1

    recover(log, branches, flow)

    again = ["txn.compensate.coupon", "txn.compensate.redpacket"]
    assert log.sent_keys() == again
    flow.on_report(log, compensated(txn, "coupon"))
    flow.on_report(log, compensated(txn, "redpacket"))
    assert log.status(txn.gtid) == "aborted"
    assert log.sent_keys() == [*again, "txn.settled"]


def test_resend_delays_double_up_to_a_cap(flow):
    assert [flow.resend_delay_s(n) for n in (1, 2, 3, 4)] == [60, 120, 240, 480]
    assert flow.resend_delay_s(20) == 600


def test_recovery_draws_what_the_reports_already_say(log, flow, branches):
    """A move that did not happen with its report (say it was lost) is made by recovery."""
    txn = submitted(log, flow, ("inventory",))
    log.report_rows[(txn.gtid, "inventory", "action")] = action(txn, "inventory")
    log.now += RESEND_S + 1
    recover(log, branches, flow)
    assert log.status(txn.gtid) == "committed"
    assert log.sent_keys() == ["txn.settled"]


TXN = Txn("g", "msg", "submitted", "out_of_stock", branches=(Branch("a", {}), Branch("b", {})))


@pytest.mark.parametrize(
    ("status", "progress", "event", "sent"),
    [
        ("submitted", Progress(), None, []),
        ("submitted", Progress(applied=frozenset("a")), None, []),
        ("submitted", Progress(applied=frozenset("ab")), "applied", ["confirmed"]),
        (
            "submitted",
            Progress(refused=frozenset("b"), rejections=("out_of_stock",)),
            "abort",
            ["txn.compensate.a", "txn.compensate.b"],
        ),
        ("aborting", Progress(compensated=frozenset("a")), None, []),
        ("aborting", Progress(compensated=frozenset("ab")), "done", ["failed"]),
        ("committed", Progress(applied=frozenset("ab")), None, []),
        ("aborted", Progress(compensated=frozenset("ab")), None, []),
    ],
)
def test_the_reaction_table(status, progress, event, sent):
    reaction = react(TXN.at(status), progress)
    assert reaction.event == event
    assert [m.payload.get("status", m.routing_key) for m in reaction.send] == sent


@pytest.mark.parametrize(
    ("status", "progress", "sent"),
    [
        ("submitted", Progress(applied=frozenset("a")), [("txn.placed.b", {"b"})]),
        ("submitted", Progress(applied=frozenset("ab")), []),
        ("aborting", Progress(compensated=frozenset("a")), [("txn.compensate.b", {"b"})]),
        ("committed", Progress(), []),
    ],
)
def test_what_recovery_sends_again(status, progress, sent):
    again = missing(TXN.at(status), progress)
    assert [(m.routing_key, set(m.payload["branches"])) for m in again] == sent
