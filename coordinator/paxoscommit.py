"""Mode paxos: Paxos Commit (Gray and Lamport 2004). The branches are 2PC's, real prepared
transactions (the participants' /xa endpoints); the commit or abort decision is a
single-decree Paxos value held by 2F+1 acceptors (paxkit/acceptors.py), so neither a
coordinator nor its log can block it.

    begin (logged durably) -> register the branch names at the acceptors (a majority)
    -> prepare every branch in parallel -> ballot 0: commit if every vote is yes, else abort
    -> chosen once a majority accepted it -> the log hears of it (no fsync wait: the
    acceptors hold it) -> commit or roll back every branch, as 2PC does

Ballot 0 belongs to the transaction's first coordinator, so it skips phase 1. When no
majority accepts it, nothing is decided: the answer is "outcome unknown" and recovery
finishes it. Recovery never presumes a paxos transaction aborted from the log: it runs
phase 1 with a higher ballot (its process's own proposer id), proposes the value of the
highest-ballot vote among the promises or else abort, learns the choice, then finishes.
The sweep over the acceptors finds instances no coordinator log holds (the acceptors know
their members) and gives the log back their Paxos decision, for recovery to carry out, so
any coordinator process finishes what another began.

Fault points (component coordinator): `before_decision` (every branch voted, ballot 0
not sent), `paxos_undecided` (ballot 0 reached no majority), `paxos_chosen` (chosen, the
log not told yet), `after_decision` (logged), and paxkit/acceptors.py's
`paxos_<op>_<acceptor>` before each call to an acceptor.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from coordinator.drivers import TwoPhaseCommit
from coordinator.ports import Branch, BranchResult, Event, Txn
from coordinator.states import FINAL, PREPARING, decision_of
from paxkit.acceptors import ABORT, COMMIT, Acceptors, Learned, Step, proposer_id
from paxkit.errors import ApiError

log = logging.getLogger(__name__)

SWEEP_BATCH = 500
UNDECIDED = "undecided"


class OutcomeUnknown(ApiError):
    """No decision yet (too few acceptors answered): recovery finishes the transaction."""

    status = 503
    code = "outcome_unknown"
    retry_after_s = 1


def timeline(steps: Iterable[Step]) -> list[Event]:
    """The acceptors' steps as timeline entries (the acceptor in place of a branch)."""
    return [Event(s.acceptor, s.op, s.outcome, s.detail, s.at) for s in steps]


class PaxosCommit(TwoPhaseCommit):
    mode = "paxos"
    branch_protocol = "2pc"
    # The log presumes abort for a gtid it never heard of (the check-back, orphaned
    # branches), which is safe only if it hears of every one before its branches do.
    durable_begin = True

    def __init__(
        self, *common: Any, acceptors: Acceptors, proposer: Callable[[], str] = proposer_id
    ) -> None:
        super().__init__(*common)
        self.acceptors = acceptors
        self.proposer = proposer  # this process's proposer id (its ballots' tie-breaker)

    def forward(self, txn: Txn) -> list[BranchResult]:
        """Register the members at a majority of acceptors, then prepare every branch; with
        no majority nothing is prepared (and every vote counts as no)."""
        registered, steps = self.acceptors.register(txn.gtid, [b.name for b in txn.branches])
        if registered:
            return super().forward(txn)
        self.log.record(txn.gtid, timeline(steps))
        detail = "not sent: no majority of acceptors registered the transaction"
        return [BranchResult(b.name, "prepare", False, "timeout", detail) for b in txn.branches]

    def decide(
        self,
        txn: Txn,
        event: str,
        reason: str | None,
        lease_s: float | None = None,
        events: Sequence[Event] = (),
    ) -> Txn:
        """Ballot 0: the decision once a majority accepted it; else the transaction as the
        log has it (preparing, unless recovery decided it meanwhile). `events` (the forward
        phase's) are logged either way."""
        learned = self.acceptors.propose_first(
            txn.gtid, self.proposer(), COMMIT if event == "commit" else ABORT
        )
        if learned.value is None:
            self.faults.hit("paxos_undecided")
            self.log.record(txn.gtid, [*events, *timeline(learned.steps)])
            logged = self.log.get(txn.gtid)
            return txn if logged is None else txn.at(logged.status, logged.reason)
        self.faults.hit("paxos_chosen")
        return self._log_decision(txn, learned, reason, lease_s, events)

    def recover(self, txn: Txn, lease_s: float, retry_delay_s: float) -> str:
        """Never presumed aborted: a transaction still preparing is decided by a takeover
        of its instance; one the acceptors can't decide yet waits for a later pass."""
        if txn.status == PREPARING:
            learned = self.acceptors.take_over(txn.gtid, self.proposer())
            if learned.value is None:
                self.log.postpone(txn.gtid, retry_delay_s, timeline(learned.steps))
                return UNDECIDED
            txn = self._log_decision(txn, learned, txn.reason or "timeout", lease_s)
        self.finish(txn, retry_delay_s=retry_delay_s)
        return decision_of(txn.status) if txn.status != PREPARING else UNDECIDED

    def resolve(self, gtid: str) -> Txn | None:
        """The check-back never presumes: a gtid the log lacks is decided by Paxos (abort,
        unless a commit may have been chosen) and logged; OutcomeUnknown while it can't be."""
        txn = self.log.get(gtid) or self.restore(gtid)
        if txn is None:
            raise OutcomeUnknown(f"transaction {gtid} is not decided yet")
        return txn

    def adopt(self, gtids: Sequence[str]) -> dict[str, str]:
        """Of gtids the log does not hold, the paxos ones (known to the acceptors), given back
        to the log as Paxos decides them; all held back as preparing while too few acceptors
        answer to tell (none of them may be presumed aborted)."""
        known = self.acceptors.known(gtids)
        if known is None:
            return {gtid: PREPARING for gtid in gtids}
        adopted = {}
        for gtid in known:
            txn = self.restore(gtid)
            adopted[gtid] = PREPARING if txn is None else txn.status
        return adopted

    def sweep(self) -> int:
        """Instances registered at the acceptors, not known decided there, older than the
        lease: those final in the log are marked decided at the acceptors; those the log
        lost are decided by a takeover and given back to it. Returns how many came back."""
        found = self.acceptors.undecided(self.txn_timeout_s, SWEEP_BATCH)
        if not found:
            return 0
        statuses = self.log.statuses(list(found))
        final = {gtid: decision_of(s) for gtid, s in statuses.items() if s in FINAL}
        self.acceptors.mark_decided(final)
        lost = [gtid for gtid in found if gtid not in statuses]
        for gtid in lost:
            log.warning("paxos transaction %s is not in the log: taking it over", gtid)
            self.restore(gtid, found[gtid])
        return len(lost)

    def restore(self, gtid: str, members: Sequence[str] = ()) -> Txn | None:
        """Write back to the log a transaction it does not hold, as its instance's takeover
        decides it (its lease run out, so recovery carries it out at once); None while the
        acceptors can't decide it."""
        learned = self.acceptors.take_over(gtid, self.proposer())
        if learned.value is None:
            return None
        names = sorted({*members, *learned.members})
        branches = [Branch(name, {}) for name in names]
        txn = self.log.begin(gtid, self.mode, branches, 0.0, durable=True)
        if txn is None:  # logged meanwhile
            return self.log.get(gtid)
        return self._log_decision(txn, learned, "timeout", 0.0)

    def _log_decision(
        self,
        txn: Txn,
        learned: Learned,
        reason: str | None,
        lease_s: float | None,
        events: Sequence[Event] = (),
    ) -> Txn:
        """Tell the log what Paxos chose (it may know already: someone else learned it);
        `events` go with it, before the acceptors' steps."""
        commit = learned.value == COMMIT
        reason = None if commit else reason or "aborted"
        status = self.log.move(
            txn.gtid,
            PREPARING,
            "commit" if commit else "abort",
            reason=reason,
            lease_s=self.txn_timeout_s if lease_s is None else lease_s,
            events=[*events, *timeline(learned.steps)],
            relaxed=True,
        )
        if status is not None:
            return txn.at(status, reason)
        logged = self.log.get(txn.gtid)
        if logged is None:
            restored = self.restore(txn.gtid, [b.name for b in txn.branches])
            return txn if restored is None else txn.at(restored.status, restored.reason)
        return txn.at(logged.status, logged.reason)
