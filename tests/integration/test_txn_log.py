"""The SQL transaction log does what its interface says (and what the unit tests' fake does):
guarded transitions from the one table, reasons and leases kept unless given, reports
deduplicated, and a bound log that commits or rolls back with its caller."""

from __future__ import annotations

import itertools
import threading

import pytest
from sqlalchemy import text

from coordinator.log import TxnLog
from coordinator.msgflow import MessageFlow
from coordinator.ports import Branch, Event
from coordinator.states import IllegalTransition
from paxkit.faults import Faults
from paxkit.messaging import BranchReport

_ids = itertools.count(1)


@pytest.fixture(scope="module")
def log(scratch_db) -> TxnLog:
    return TxnLog(scratch_db("coordinator"))


def begun(log: TxnLog, lease_s: float = 60, mode: str = "2pc") -> str:
    """A transaction as its driver begins it (msg: as the initiator's event begins it)."""
    gtid = f"gtx-it-log-{next(_ids)}"
    status = "submitted" if mode == "msg" else "preparing"
    branches = [Branch("inventory", {"n": 1})]
    assert log.begin(gtid, mode, branches, lease_s, durable=True, status=status)
    return gtid


def lease_left(log: TxnLog, gtid: str) -> float:
    row = log.db.fetch_one(
        "SELECT extract(epoch FROM lease_until - now()) AS s FROM global_txns WHERE gtid = :g",
        g=gtid,
    )
    assert row is not None
    return float(row["s"])


def test_a_move_happens_only_from_the_status_it_names(log):
    gtid = begun(log)
    assert log.begin(gtid, "saga", [], 60, durable=True) is None
    assert log.move(gtid, "preparing", "abort", lease_s=30) == "aborting"
    assert log.move(gtid, "preparing", "abort") is None  # not preparing any more
    with pytest.raises(IllegalTransition):
        log.move(gtid, "aborting", "commit")
    txn = log.get(gtid)
    assert txn is not None
    assert (txn.status, txn.branches) == ("aborting", (Branch("inventory", {"n": 1}),))


def test_a_msg_transaction_begins_submitted_and_is_never_presumed(log):
    branches = [Branch("inventory", {"n": 1})]
    begun_txn = log.begin("gtx-msg-log-1", "msg", branches, 60, durable=False, status="submitted")
    assert begun_txn is not None and begun_txn.status == "submitted"
    assert log.resolve("gtx-msg-log-2", "msg") is None  # its begin may still be on its way
    assert log.get("gtx-msg-log-2") is None
    assert log.move("gtx-msg-log-1", "submitted", "applied") == "committed"


def test_reason_and_lease_are_kept_unless_given_and_events_recorded_anyway(log):
    gtid = begun(log, lease_s=300)
    assert log.move(gtid, "preparing", "abort", reason="out_of_stock") == "aborting"
    assert 290 < lease_left(log, gtid) <= 300
    late = Event("coupon", "action", "ok")
    assert log.move(gtid, "preparing", "commit", events=[late]) is None
    assert log.move(gtid, "aborting", "done", lease_s=5) == "aborted"
    txn = log.get(gtid)
    assert txn is not None and (txn.status, txn.reason) == ("aborted", "out_of_stock")
    assert lease_left(log, gtid) <= 5
    assert [(e["branch"], e["op"]) for e in log.events(gtid)] == [("coupon", "action")]


def test_resolving_an_unknown_transaction_records_it_aborted(log):
    txn = log.resolve("gtx-it-log-never", "2pc")
    assert txn is not None
    assert (txn.status, txn.reason, txn.branches) == ("aborted", "timeout", ())
    assert log.begin("gtx-it-log-never", "2pc", [], 60, durable=True) is None


def test_a_report_counts_once_but_every_one_is_on_the_timeline(log):
    gtid = begun(log)
    report = BranchReport(gtid, "inventory", "action", False, "out_of_stock", "rejected")
    assert log.add_report(report) is True
    assert log.add_report(report) is False
    assert log.reports(gtid) == [BranchReport(gtid, "inventory", "action", False, "out_of_stock")]
    assert [e["outcome"] for e in log.events(gtid)] == ["out_of_stock", "out_of_stock"]


def test_a_bound_log_commits_and_rolls_back_with_its_caller(log):
    gtid = begun(log, mode="msg")
    with pytest.raises(RuntimeError), log.db.transaction() as conn:
        bound = log.bound(conn)
        bound.add_report(BranchReport(gtid, "inventory", "action", True))
        assert bound.lock(gtid) is not None
        assert bound.move(gtid, "submitted", "applied") == "committed"
        bound.publish("txn.settled", {"gtid": gtid})
        raise RuntimeError("the consumer's transaction fails")
    assert log.get(gtid).status == "submitted"
    assert log.reports(gtid) == []
    assert unsent(log, gtid) == 0

    with log.db.transaction() as conn:
        bound = log.bound(conn)
        assert bound.move(gtid, "submitted", "applied") == "committed"
        bound.publish("txn.settled", {"gtid": gtid})
    assert log.get(gtid).status == "committed"
    assert unsent(log, gtid) == 1


def unsent(log: TxnLog, gtid: str) -> int:
    with log.db.transaction() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM outbox WHERE payload->>'gtid' = :g"), {"g": gtid}
            ).scalar_one()
        )


def test_a_report_racing_its_begin_is_seen_by_one_of_them(log):
    """The begin's unit of work is still open when the branch's report arrives: the report
    waits on the transaction's lock, then finds the begin and draws on it, instead of
    filing itself as early where the begin, already past its look, never sees it."""
    no_pool = None  # msg calls no branch: its messages go through the log's outbox
    flow = MessageFlow(log, KnownBranches(), Faults("coordinator", None), no_pool, 8.0, 1.0, 60.0)  # type: ignore[arg-type]
    gtid = f"gtx-it-race-{next(_ids)}"
    begin = {"gtid": gtid, "branches": [{"name": "inventory", "payload": {"n": 1}}]}
    report = BranchReport(gtid, "inventory", "action", True, None)
    with log.db.transaction() as first:
        flow.on_begun(log.bound(first), begin)
        racing = threading.Thread(target=report_in_own_unit_of_work, args=(flow, log, report))
        racing.start()
        racing.join(0.5)
        assert racing.is_alive(), "the report waits for the begin's unit of work"
    racing.join(10)
    assert not racing.is_alive()
    assert log.get(gtid).status == "committed"


class KnownBranches:
    names = ("inventory",)

    def known(self, name: str) -> bool:
        return name in self.names


def report_in_own_unit_of_work(flow: MessageFlow, log: TxnLog, report: BranchReport) -> None:
    with log.db.transaction() as conn:
        flow.on_report(log.bound(conn), report)
