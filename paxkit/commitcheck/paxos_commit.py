"""Paxos Commit, in the simplified form: one Paxos instance decides the transaction.

Gray and Lamport run one Paxos instance per participant, each choosing that participant's
"prepared" or "aborted"; the transaction commits if every instance chose "prepared". This
model keeps their fault tolerance but uses one instance for the whole decision: the
coordinator collects the votes as in 2PC, then proposes "commit" (all yes) or "abort"
through acceptors a1..a3 with the core of paxkit.paxos; the first coordinator owns
ballot 0 and skips phase 1, as in the paper. A participant that voted yes learns the
outcome by reading the live acceptors' records (a majority accepted one ballot). One that
hears nothing from the coordinator asks a backup coordinator, which takes over with a
higher ballot: it adopts any value phase 1 reports and otherwise proposes "abort" (no
commit can have been chosen then). An acceptor answers a proposer in the same step (an
RPC); its requests can still be delayed, reordered or lost with a crash. One instance is
what paxmart's `paxos` mode builds (one decision per transaction), and it keeps the search
small; with per-participant instances the same argument holds for each instance.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, replace
from typing import Any, cast

from paxkit import paxos
from paxkit.commitcheck.explorer import (
    COORDINATOR,
    PARTICIPANTS,
    Message,
    Outcome,
    Peek,
    Reaction,
)
from paxkit.commitcheck.voting import (
    IN_DOUBT,
    Coordinator,
    CoordinatorPhase,
    Signal,
    Stage,
    VotingProtocol,
)
from paxkit.paxos import Accepted, AcceptorState, LearnerState, ProposerState

BACKUP = "backup"
ACCEPTORS = ("a1", "a2", "a3")


@dataclass(frozen=True)
class Leader(Coordinator):
    """A coordinator instance with its proposer; the backup starts standing by."""

    proposer: ProposerState[Outcome] | None = None


class PaxosCommit(VotingProtocol):
    """Searched with one fault by default, to stay within the test suite's time: the
    coordinator's crash, an acceptor's or a partition (with two: 234,039 worlds, 57 s,
    still consistent and non-blocking). Participants vote yes: a no sends the coordinator
    down the abort proposal its timeout also takes, and only makes the search larger."""

    request = Signal.PREPARE
    default_max_faults = 1

    def __init__(self, acceptor_crashes: int = 1, coordinator_fails: bool = True) -> None:
        """`coordinator_fails=False`: only acceptors fail (to show a lost majority blocks)."""
        self.acceptor_crashes = acceptor_crashes
        self.coordinator_fails = coordinator_fails
        self.name = f"paxos commit (up to {acceptor_crashes} of 3 acceptors may crash)"
        self.processes = (COORDINATOR, *PARTICIPANTS, BACKUP, *ACCEPTORS)

    def votes(self, me: str, to: str) -> tuple[Reaction, ...]:
        return super().votes(me, to)[:1]

    def initial_states(self) -> tuple[Hashable, ...]:
        participants = tuple(Stage.IDLE for _ in PARTICIPANTS)
        standing_by = Leader(CoordinatorPhase.STANDING_BY)
        return (Leader(), *participants, standing_by, *(AcceptorState() for _ in ACCEPTORS))

    def all_voted_yes(self, state: Coordinator) -> Reaction:
        return propose_first(cast(Leader, state), Outcome.COMMIT)

    def coordinator_gives_up(self, state: Coordinator) -> Reaction:
        return propose_first(cast(Leader, state), Outcome.ABORT)

    def coordinator_goes_on(self, state: Coordinator, message: Message) -> tuple[Reaction, ...]:
        return leader_hears(COORDINATOR, cast(Leader, state), message)

    def other_hears(self, process: str, state: Hashable, message: Message) -> tuple[Reaction, ...]:
        if process in ACCEPTORS:
            return (acceptor_hears(process, cast(AcceptorState[Outcome], state), message),)
        leader = cast(Leader, state)
        if leader.phase is CoordinatorPhase.STANDING_BY and message.payload is Signal.RECOVER:
            return (take_over(leader),)
        return leader_hears(BACKUP, leader, message)

    def in_doubt_timeout(self, participant: str, stage: Stage) -> Reaction | None:
        ask = Message(participant, BACKUP, Signal.RECOVER)
        return Reaction(stage, (ask,), "asks the backup coordinator")

    def spontaneous(self, process: str, state: Hashable, peek: Peek) -> Reaction | None:
        """An in-doubt participant reads the acceptors' records and finds the outcome."""
        if state not in IN_DOUBT:
            return None
        chosen = chosen_outcome([cast(AcceptorState[Outcome] | None, peek(a)) for a in ACCEPTORS])
        if chosen is None:
            return None
        stage = Stage.COMMITTED if chosen is Outcome.COMMIT else Stage.ABORTED
        return Reaction(stage, note=f"reads the acceptors: {chosen.value} chosen")

    def is_final(self, process: str, state: Hashable) -> bool:
        if isinstance(state, Leader):  # the backup's promises are answered at once
            return state.phase in (CoordinatorPhase.PROPOSING, CoordinatorPhase.PROPOSED)
        return super().is_final(process, state)

    def answers_at_once(self, message: Message) -> bool:
        return message.sender in ACCEPTORS

    def may_crash(self, process: str, crashed: frozenset[str]) -> bool:
        """The coordinator, and acceptors up to the limit; the backup stands for "some
        coordinator instance is up"; a crashed participant looks to the others like one cut
        off, which the partitions cover."""
        if process in ACCEPTORS:
            down = crashed & set(ACCEPTORS)
            return len(down) < self.acceptor_crashes and process == first_up(ACCEPTORS, down)
        return process == COORDINATOR and self.coordinator_fails

    def may_cut(self, participant: str, cut: frozenset[str]) -> bool:
        return self.coordinator_fails and participant == first_up(PARTICIPANTS, cut)

    def describe(self, payload: Hashable) -> str:
        if isinstance(payload, Signal):
            return payload.value
        return describe_paxos(cast(paxos.Message, payload))


def propose_first(state: Leader, outcome: Outcome) -> Reaction:
    """The first coordinator owns round 0, so it goes straight to phase 2."""
    proposer, accepts = paxos.skip_to_round_zero(ProposerState(COORDINATOR, outcome))
    proposed = replace(state, phase=CoordinatorPhase.PROPOSED, proposer=proposer)
    note = f"proposes {outcome.value} at ballot {proposer.ballot}"
    return Reaction(proposed, to_acceptors(COORDINATOR, accepts), note)


def first_up(names: tuple[str, ...], down: frozenset[str]) -> str | None:
    """Acceptors, and participants, are interchangeable, so a fault only ever needs to
    strike the first one it has not struck yet: any other run is this one renamed."""
    return next((name for name in names if name not in down), None)


def take_over(backup: Leader) -> Reaction:
    """Outbid round 0 with phase 1; abort unless phase 1 reports a value."""
    proposer, prepares = paxos.start_round(ProposerState(BACKUP, Outcome.ABORT))
    proposing = replace(backup, phase=CoordinatorPhase.PROPOSING, proposer=proposer)
    note = f"takes over with ballot {proposer.ballot}"
    return Reaction(proposing, to_acceptors(BACKUP, prepares), note)


def leader_hears(leader: str, state: Leader, message: Message) -> tuple[Reaction, ...]:
    payload = message.payload
    if state.phase is not CoordinatorPhase.PROPOSING or state.proposer is None:
        return ()
    if not isinstance(payload, paxos.Promise):
        return ()
    proposer, accepts = paxos.receive_promise(state.proposer, payload)
    phase = CoordinatorPhase.PROPOSED if accepts else state.phase
    return (
        Reaction(replace(state, phase=phase, proposer=proposer), to_acceptors(leader, accepts)),
    )


def chosen_outcome(acceptors: list[AcceptorState[Outcome] | None]) -> Outcome | None:
    """What a learner reading the live acceptors' records (None: crashed) finds chosen."""
    learner = LearnerState[Outcome](len(ACCEPTORS))
    for name, state in zip(ACCEPTORS, acceptors, strict=True):
        if state is not None and state.accepted is not None:
            vote = state.accepted
            learner = paxos.receive_accepted(learner, Accepted(vote.ballot, name, vote.value))
    return learner.chosen


def acceptor_hears(name: str, state: AcceptorState[Outcome], message: Message) -> Reaction:
    payload = message.payload
    replies: tuple[paxos.Message, ...]
    if isinstance(payload, paxos.Prepare):
        state, replies = paxos.receive_prepare(state, name, payload)
    else:
        state, replies = paxos.receive_accept(state, name, cast(paxos.Accept[Outcome], payload))
    return Reaction(state, tuple(Message(name, message.sender, reply) for reply in replies))


def to_acceptors(leader: str, messages: tuple[paxos.Message, ...]) -> tuple[Message, ...]:
    return tuple(Message(leader, a, message) for message in messages for a in ACCEPTORS)


def describe_paxos(message: paxos.Message) -> str:
    kind = type(message).__name__
    value: Any = getattr(message, "value", None)
    if isinstance(message, paxos.Promise) and message.accepted is not None:
        value = f"had {message.accepted.value.value} at {message.accepted.ballot}"
    if isinstance(message, paxos.Nack):
        value = f"promised {message.promised}"
    shown = value.value if isinstance(value, Outcome) else value
    return f"{kind}[{message.ballot}]" + (f" {shown}" if shown else "")
