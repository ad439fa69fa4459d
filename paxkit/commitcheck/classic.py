"""Two-phase and three-phase commit with one coordinator and participants p1..p3."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import replace

from paxkit.commitcheck.explorer import COORDINATOR, PARTICIPANTS, Message, Reaction
from paxkit.commitcheck.voting import (
    Coordinator,
    CoordinatorPhase,
    Signal,
    Stage,
    VotingProtocol,
    aborts,
    broadcast,
    commits,
)


class TwoPhaseCommit(VotingProtocol):
    """Prepare, then Commit or Abort. A prepared participant must wait for the coordinator;
    `abort_on_timeout` is the classic mistake of aborting instead (shown inconsistent)."""

    request = Signal.PREPARE

    def __init__(self, abort_on_timeout: bool = False) -> None:
        self.abort_on_timeout = abort_on_timeout
        self.name = "2pc, aborting on timeout (broken)" if abort_on_timeout else "2pc"
        self.processes = (COORDINATOR, *PARTICIPANTS)

    def initial_states(self) -> tuple[Hashable, ...]:
        return (Coordinator(), *(Stage.IDLE for _ in PARTICIPANTS))

    def all_voted_yes(self, state: Coordinator) -> Reaction:
        return Reaction(
            Coordinator(CoordinatorPhase.COMMITTED), broadcast(Signal.COMMIT), "commits"
        )

    def in_doubt_timeout(self, participant: str, stage: Stage) -> Reaction | None:
        return aborts() if self.abort_on_timeout else None


class ThreePhaseCommit(VotingProtocol):
    """CanCommit, PreCommit, DoCommit, with the participants' timeouts of the protocol: a
    pre-committed participant that hears nothing commits, an uncertain one aborts."""

    name = "3pc"
    request = Signal.CAN_COMMIT
    processes = (COORDINATOR, *PARTICIPANTS)

    def initial_states(self) -> tuple[Hashable, ...]:
        return (Coordinator(), *(Stage.IDLE for _ in PARTICIPANTS))

    def participant_hears(self, me: str, stage: Stage, message: Message) -> tuple[Reaction, ...]:
        if stage is Stage.PREPARED and message.payload is Signal.PRE_COMMIT:
            ack = Message(me, message.sender, Signal.ACK)
            return (Reaction(Stage.PRECOMMITTED, (ack,), "pre-commits"),)
        return super().participant_hears(me, stage, message)

    def all_voted_yes(self, state: Coordinator) -> Reaction:
        precommitting = Coordinator(CoordinatorPhase.PRECOMMITTING)
        return Reaction(precommitting, broadcast(Signal.PRE_COMMIT), "sends PreCommit")

    def coordinator_goes_on(self, state: Coordinator, message: Message) -> tuple[Reaction, ...]:
        if state.phase is not CoordinatorPhase.PRECOMMITTING or message.payload is not Signal.ACK:
            return ()
        acked = replace(state, answered=state.answered | {message.sender})
        if acked.silent():
            return (Reaction(acked),)
        done = Coordinator(CoordinatorPhase.COMMITTED)
        return (Reaction(done, broadcast(Signal.DO_COMMIT), "commits"),)

    def awaited(self, process: str, state: Hashable) -> tuple[str, ...]:
        if isinstance(state, Coordinator) and state.phase is CoordinatorPhase.PRECOMMITTING:
            return state.silent()
        return super().awaited(process, state)

    def in_doubt_timeout(self, participant: str, stage: Stage) -> Reaction | None:
        return commits() if stage is Stage.PRECOMMITTED else aborts()
