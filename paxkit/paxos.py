"""Single-decree Paxos as pure state transitions: no I/O, no clock, no randomness.

Lamport's "Paxos Made Simple" (2001) splits agreement on one value among proposers,
acceptors and learners. A proposer first asks a majority of acceptors to promise to ignore
lower ballots and to tell it what they have already accepted (phase 1); it then asks them
to accept the value of the highest ballot among those answers, or its own value if there is
none (phase 2). A value is chosen once a majority has accepted it in one ballot. Any two
majorities share an acceptor, so a later proposer always hears of a value that may have been
chosen and carries it forward: two different values can never be chosen, however messages
are lost, duplicated or reordered and however many proposers compete. Progress needs one
proposer left alone long enough with a majority of acceptors up.

Gray and Lamport ("Consensus on Transaction Commit", 2004) put this in place of the single
coordinator of two-phase commit: the commit or abort outcome is a Paxos value held by 2F+1
acceptors, so the failure of a coordinator or of up to F acceptors cannot block a decision;
any coordinator may take over with a higher ballot and finish it.

Every state and message is a frozen dataclass. A transition takes a state and a message and
returns the new state and the messages to send. Routing is the caller's: Prepare and Accept
go to every acceptor, Promise and Nack to the ballot's proposer, Accepted to every learner.
The value type is generic (the commit protocol uses "commit" / "abort").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, Generic, TypeAlias, TypeVar

V = TypeVar("V")

DEFAULT_ACCEPTORS = 3


def quorum(acceptor_count: int) -> int:
    """A majority: any two of them share an acceptor."""
    return acceptor_count // 2 + 1


@dataclass(frozen=True, order=True)
class Ballot:
    """Ordered by round, then by proposer id, so no two proposers ever use the same ballot."""

    round: int
    proposer: str

    def __str__(self) -> str:
        return f"{self.round}.{self.proposer}"


NO_BALLOT = Ballot(0, "")  # below every ballot a proposer uses (round 0 belongs to one)


@dataclass(frozen=True)
class Vote(Generic[V]):
    """A value an acceptor accepted, with the ballot it was accepted in."""

    ballot: Ballot
    value: V


@dataclass(frozen=True)
class Prepare:
    ballot: Ballot


@dataclass(frozen=True)
class Promise(Generic[V]):
    ballot: Ballot
    acceptor: str
    accepted: Vote[V] | None


@dataclass(frozen=True)
class Accept(Generic[V]):
    ballot: Ballot
    value: V


@dataclass(frozen=True)
class Accepted(Generic[V]):
    ballot: Ballot
    acceptor: str
    value: V


@dataclass(frozen=True)
class Nack:
    """A refusal that names the higher ballot promised, so the proposer can outbid it."""

    ballot: Ballot
    acceptor: str
    promised: Ballot


Message: TypeAlias = Prepare | Promise[Any] | Accept[Any] | Accepted[Any] | Nack


@dataclass(frozen=True)
class AcceptorState(Generic[V]):
    """All an acceptor must keep durably: what it promised and what it last accepted."""

    promised: Ballot = NO_BALLOT
    accepted: Vote[V] | None = None

    def to_record(self) -> dict[str, Any]:
        """Flat columns, so the state fits one row per acceptor."""
        accepted = self.accepted
        return {
            "promised_round": self.promised.round,
            "promised_by": self.promised.proposer,
            "accepted_round": accepted.ballot.round if accepted else None,
            "accepted_by": accepted.ballot.proposer if accepted else None,
            "accepted_value": accepted.value if accepted else None,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> AcceptorState[Any]:
        promised = Ballot(record["promised_round"], record["promised_by"])
        if record["accepted_round"] is None:
            return cls(promised, None)
        ballot = Ballot(record["accepted_round"], record["accepted_by"])
        return cls(promised, Vote(ballot, record["accepted_value"]))


def receive_prepare(
    state: AcceptorState[V], acceptor: str, prepare: Prepare
) -> tuple[AcceptorState[V], tuple[Promise[V] | Nack, ...]]:
    """Promise (again, for a duplicate) unless a higher ballot was promised."""
    if prepare.ballot < state.promised:
        return state, (Nack(prepare.ballot, acceptor, state.promised),)
    promise = Promise(prepare.ballot, acceptor, state.accepted)
    return replace(state, promised=prepare.ballot), (promise,)


def receive_accept(
    state: AcceptorState[V], acceptor: str, accept: Accept[V]
) -> tuple[AcceptorState[V], tuple[Accepted[V] | Nack, ...]]:
    """Accept unless a higher ballot was promised; accepting also promises that ballot."""
    if accept.ballot < state.promised:
        return state, (Nack(accept.ballot, acceptor, state.promised),)
    accepted = AcceptorState(accept.ballot, Vote(accept.ballot, accept.value))
    return accepted, (Accepted(accept.ballot, acceptor, accept.value),)


class ProposerPhase(Enum):
    IDLE = "idle"
    PREPARING = "preparing"
    ACCEPTING = "accepting"


@dataclass(frozen=True)
class ProposerState(Generic[V]):
    """One proposer; `value` is its own, proposed only if no acceptor reports an accepted one."""

    proposer: str
    value: V
    acceptor_count: int = DEFAULT_ACCEPTORS
    ballot: Ballot = NO_BALLOT
    phase: ProposerPhase = ProposerPhase.IDLE
    promises: frozenset[Promise[V]] = frozenset()
    highest_round_seen: int = 0


def start_round(state: ProposerState[V]) -> tuple[ProposerState[V], tuple[Prepare, ...]]:
    """Phase 1 with a ballot above any this proposer has used or been refused by."""
    ballot = Ballot(max(state.ballot.round, state.highest_round_seen) + 1, state.proposer)
    started = replace(state, ballot=ballot, phase=ProposerPhase.PREPARING, promises=frozenset())
    return started, (Prepare(ballot),)


def skip_to_round_zero(state: ProposerState[V]) -> tuple[ProposerState[V], tuple[Accept[V], ...]]:
    """Gray and Lamport's shortcut for the one proposer that owns round 0 (the first
    coordinator): no lower ballot exists, so nothing can have been chosen and phase 1 is
    skipped. Every other proposer must use start_round."""
    ballot = Ballot(0, state.proposer)
    accepting = replace(state, ballot=ballot, phase=ProposerPhase.ACCEPTING)
    return accepting, (Accept(ballot, state.value),)


def receive_promise(
    state: ProposerState[V], promise: Promise[V]
) -> tuple[ProposerState[V], tuple[Accept[V], ...]]:
    """Collect promises of the current ballot; with a majority, start phase 2."""
    if state.phase is not ProposerPhase.PREPARING or promise.ballot != state.ballot:
        return state, ()
    promises = state.promises | {promise}
    if len(_acceptors(promises)) < quorum(state.acceptor_count):
        return replace(state, promises=promises), ()
    accept = Accept(state.ballot, value_to_propose(promises, state.value))
    return replace(state, phase=ProposerPhase.ACCEPTING, promises=promises), (accept,)


def value_to_propose(promises: Iterable[Promise[V]], own: V) -> V:
    """The value of the highest-ballot vote reported: it is the only one that may be chosen."""
    votes = [promise.accepted for promise in promises if promise.accepted is not None]
    if not votes:
        return own
    return max(votes, key=lambda vote: vote.ballot).value


def receive_nack(state: ProposerState[V], nack: Nack) -> ProposerState[V]:
    """Remember the ballot to outbid; a refused round is abandoned (a retry is a new round)."""
    seen = max(state.highest_round_seen, nack.promised.round)
    if nack.ballot == state.ballot:
        return replace(state, phase=ProposerPhase.IDLE, highest_round_seen=seen)
    return replace(state, highest_round_seen=seen)


@dataclass(frozen=True)
class LearnerState(Generic[V]):
    acceptor_count: int = DEFAULT_ACCEPTORS
    accepted: frozenset[Accepted[V]] = frozenset()

    def values_chosen(self) -> dict[Ballot, V]:
        """Each ballot a majority accepted, with its value (Paxos keeps them all equal)."""
        by_ballot: dict[Ballot, set[str]] = {}
        for message in self.accepted:
            by_ballot.setdefault(message.ballot, set()).add(message.acceptor)
        values = {message.ballot: message.value for message in self.accepted}
        needed = quorum(self.acceptor_count)
        return {b: values[b] for b, who in by_ballot.items() if len(who) >= needed}

    @property
    def chosen(self) -> V | None:
        """The value chosen, once known (from the lowest ballot a majority accepted)."""
        chosen = self.values_chosen()
        return chosen[min(chosen)] if chosen else None


def receive_accepted(state: LearnerState[V], accepted: Accepted[V]) -> LearnerState[V]:
    return replace(state, accepted=state.accepted | {accepted})


def _acceptors(promises: Iterable[Promise[Any]]) -> set[str]:
    return {promise.acceptor for promise in promises}
