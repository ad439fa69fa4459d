"""What every modelled protocol shares: a coordinator asks p1..p3 for a vote, each votes yes
(and is then in doubt) or no, and the coordinator gives up on a no or on a silent voter."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Hashable
from dataclasses import dataclass, replace
from enum import Enum
from typing import cast

from paxkit.commitcheck.explorer import (
    COORDINATOR,
    PARTICIPANTS,
    CommitProtocol,
    Message,
    Outcome,
    Reaction,
)


class Signal(Enum):
    PREPARE = "Prepare"
    CAN_COMMIT = "CanCommit"
    YES = "Yes"
    NO = "No"
    PRE_COMMIT = "PreCommit"
    ACK = "Ack"
    DO_COMMIT = "DoCommit"
    COMMIT = "Commit"
    ABORT = "Abort"
    RECOVER = "Recover"


class Stage(Enum):
    """A participant's state; PREPARED and PRECOMMITTED are in doubt."""

    IDLE = "idle"
    PREPARED = "prepared"
    PRECOMMITTED = "precommitted"
    COMMITTED = "committed"
    ABORTED = "aborted"


IN_DOUBT = frozenset({Stage.PREPARED, Stage.PRECOMMITTED})
OUTCOME_OF_STAGE = {Stage.COMMITTED: Outcome.COMMIT, Stage.ABORTED: Outcome.ABORT}
DECISIONS = {Signal.COMMIT: Stage.COMMITTED, Signal.DO_COMMIT: Stage.COMMITTED}
DECISIONS[Signal.ABORT] = Stage.ABORTED


class CoordinatorPhase(Enum):
    STANDING_BY = "standing by"
    COLLECTING = "collecting votes"
    PRECOMMITTING = "collecting PreCommit acks"
    PROPOSING = "running Paxos phase 1"
    PROPOSED = "proposed (participants learn from the acceptors)"
    COMMITTED = "committed"
    ABORTED = "aborted"


@dataclass(frozen=True)
class Coordinator:
    phase: CoordinatorPhase = CoordinatorPhase.COLLECTING
    answered: frozenset[str] = frozenset()  # who voted yes, or acked, in the current phase

    def silent(self) -> tuple[str, ...]:
        return tuple(p for p in PARTICIPANTS if p not in self.answered)


def broadcast(payload: Signal, sender: str = COORDINATOR) -> tuple[Message, ...]:
    return tuple(Message(sender, p, payload) for p in PARTICIPANTS)


def commits() -> Reaction:
    return Reaction(Stage.COMMITTED, note="commits")


def aborts() -> Reaction:
    return Reaction(Stage.ABORTED, note="aborts")


class VotingProtocol(CommitProtocol):
    """The vote request (`request`) and its collection; the rest is each protocol's."""

    request: Signal

    def initial_messages(self) -> frozenset[Message]:
        return frozenset(broadcast(self.request))

    def on_message(self, process: str, state: Hashable, message: Message) -> tuple[Reaction, ...]:
        if process in PARTICIPANTS:
            return self.participant_hears(process, cast(Stage, state), message)
        if process == COORDINATOR:
            return self.coordinator_hears(cast(Coordinator, state), message)
        return self.other_hears(process, state, message)

    def participant_hears(self, me: str, stage: Stage, message: Message) -> tuple[Reaction, ...]:
        if stage is Stage.IDLE and message.payload is self.request:
            return self.votes(me, message.sender)
        decided = DECISIONS.get(cast(Signal, message.payload))
        if decided is not None and stage not in OUTCOME_OF_STAGE:
            return (commits() if decided is Stage.COMMITTED else aborts(),)
        return ()

    def votes(self, me: str, to: str) -> tuple[Reaction, ...]:
        yes = Reaction(Stage.PREPARED, (Message(me, to, Signal.YES),), "votes yes")
        no = Reaction(Stage.ABORTED, (Message(me, to, Signal.NO),), "votes no, aborts")
        return yes, no

    def coordinator_hears(self, state: Coordinator, message: Message) -> tuple[Reaction, ...]:
        if state.phase is not CoordinatorPhase.COLLECTING:
            return self.coordinator_goes_on(state, message)
        if message.payload is Signal.NO:
            return (self.coordinator_gives_up(state),)
        if message.payload is not Signal.YES:
            return ()
        voted = replace(state, answered=state.answered | {message.sender})
        if voted.silent():
            return (Reaction(voted),)
        return (self.all_voted_yes(voted),)

    @abstractmethod
    def all_voted_yes(self, state: Coordinator) -> Reaction: ...

    def coordinator_gives_up(self, state: Coordinator) -> Reaction:
        """On a no vote, or when a voter (or an acker) can no longer be heard."""
        return Reaction(Coordinator(CoordinatorPhase.ABORTED), broadcast(Signal.ABORT), "aborts")

    def coordinator_goes_on(self, state: Coordinator, message: Message) -> tuple[Reaction, ...]:
        """After the votes: by default the coordinator has decided and ignores the rest."""
        return ()

    def other_hears(self, process: str, state: Hashable, message: Message) -> tuple[Reaction, ...]:
        raise ValueError(f"{self.name} has no process {process}")

    def awaited(self, process: str, state: Hashable) -> tuple[str, ...]:
        if process in PARTICIPANTS:
            return (COORDINATOR,) if state is Stage.IDLE or state in IN_DOUBT else ()
        if process == COORDINATOR and isinstance(state, Coordinator):
            return state.silent() if state.phase is CoordinatorPhase.COLLECTING else ()
        return ()

    def on_timeout(self, process: str, state: Hashable) -> Reaction | None:
        if process == COORDINATOR:
            return self.coordinator_gives_up(cast(Coordinator, state))
        if state is Stage.IDLE:
            return Reaction(Stage.ABORTED, note="aborts before voting")
        return self.in_doubt_timeout(process, cast(Stage, state))

    def in_doubt_timeout(self, participant: str, stage: Stage) -> Reaction | None:
        """A participant that voted yes hears nothing; by default it waits (None)."""
        return None

    def is_final(self, process: str, state: Hashable) -> bool:
        if isinstance(state, Coordinator):
            return state.phase in (CoordinatorPhase.COMMITTED, CoordinatorPhase.ABORTED)
        return state in OUTCOME_OF_STAGE

    def outcome(self, participant: str, state: Hashable) -> Outcome | None:
        return OUTCOME_OF_STAGE.get(cast(Stage, state))

    def in_doubt(self, participant: str, state: Hashable) -> bool:
        return state in IN_DOUBT
