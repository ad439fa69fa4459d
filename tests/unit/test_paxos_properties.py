"""Single-decree Paxos (paxkit.paxos) under a hostile simulated network.

Messages are lost, duplicated and delivered in any order; acceptors crash and restart with
the state they wrote before the crash (each transition goes through its serialised record,
as a row in a database would); two proposers with different values compete. Safety is an
invariant after every step. Liveness is checked at the end of every run: once the chaos
stops, one proposer, a majority of acceptors and eventual delivery choose a value within a
bounded number of rounds. The same machine run against deliberately broken acceptors must
fail, which shows that the properties can catch a bug.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from paxkit import paxos
from paxkit.paxos import AcceptorState, Ballot, LearnerState, ProposerPhase, ProposerState

pytestmark = pytest.mark.unit

ACCEPTORS = ("a1", "a2", "a3")
PROPOSER_VALUES = {"p1": "commit", "p2": "abort"}
LIVE_PROPOSER = "p1"
LEARNERS = ("l1", "l2")
# After the chaos is drained, one round may be refused (an acceptor promised a higher
# ballot); the refusal names that ballot, so the next round outbids it and succeeds.
ROUNDS_TO_CHOOSE = 2
# Each of those rounds delivers at most Prepare, Promise, Accept and Accepted to every learner.
DELIVERIES_PER_ROUND = len(ACCEPTORS) * (3 + len(LEARNERS))
MAX_BURST = 6

PrepareRule = Callable[..., tuple[AcceptorState[Any], tuple[paxos.Message, ...]]]
AcceptRule = Callable[..., tuple[AcceptorState[Any], tuple[paxos.Message, ...]]]


@dataclass(frozen=True)
class Envelope:
    recipient: str
    message: paxos.Message


class SimulatedCluster:
    """Acceptors, proposers and learners joined by a network the test controls."""

    def __init__(self, prepare_rule: PrepareRule, accept_rule: AcceptRule) -> None:
        self.prepare_rule = prepare_rule
        self.accept_rule = accept_rule
        self.disks = {name: AcceptorState[str]().to_record() for name in ACCEPTORS}
        self.crashed: set[str] = set()
        self.proposers = {n: ProposerState(n, v) for n, v in PROPOSER_VALUES.items()}
        self.learners = {name: LearnerState[str]() for name in LEARNERS}
        self.network: list[Envelope] = []
        self.accept_history: set[tuple[str, Ballot, str]] = set()
        self.proposals: set[tuple[Ballot, str]] = set()

    def start_round(self, proposer: str) -> None:
        self.proposers[proposer], prepares = paxos.start_round(self.proposers[proposer])
        self.send(prepares)

    def may_time_out(self, proposer: str) -> bool:
        """Refused, or nothing of its current ballot is still in flight: it hears nothing."""
        state = self.proposers[proposer]
        if state.phase is ProposerPhase.IDLE:
            return True
        return all(envelope.message.ballot != state.ballot for envelope in self.network)

    def send(self, messages: tuple[paxos.Message, ...]) -> None:
        for message in messages:
            if isinstance(message, paxos.Accept):
                self.proposals.add((message.ballot, message.value))
            self.network.extend(Envelope(to, message) for to in recipients(message))

    def deliver(self, index: int) -> None:
        envelope = self.network.pop(index)
        name, message = envelope.recipient, envelope.message
        if isinstance(message, paxos.Prepare | paxos.Accept):
            self.deliver_to_acceptor(name, message)
        elif isinstance(message, paxos.Nack):
            self.proposers[name] = paxos.receive_nack(self.proposers[name], message)
        elif isinstance(message, paxos.Promise):
            self.proposers[name], accepts = paxos.receive_promise(self.proposers[name], message)
            self.send(accepts)
        else:
            self.learners[name] = paxos.receive_accepted(self.learners[name], message)

    def deliver_to_acceptor(self, name: str, message: paxos.Prepare | paxos.Accept[Any]) -> None:
        if name in self.crashed:
            return
        state = AcceptorState[str].from_record(self.disks[name])
        rule = self.prepare_rule if isinstance(message, paxos.Prepare) else self.accept_rule
        state, replies = rule(state, name, message)
        self.disks[name] = state.to_record()
        if state.accepted is not None:
            self.accept_history.add((name, state.accepted.ballot, state.accepted.value))
        self.send(replies)

    def drain(self) -> int:
        """Eventual delivery: everything in flight, in order, until nothing is left."""
        delivered = 0
        while self.network:
            self.deliver(0)
            delivered += 1
        return delivered

    def stabilise(self) -> tuple[int, int]:
        """Stop the chaos; rounds and deliveries the live proposer needs until all learn."""
        for name in sorted(self.crashed)[: len(self.crashed) - len(ACCEPTORS) // 2]:
            self.crashed.discard(name)
        self.drain()
        rounds = deliveries = 0
        while not self.all_learned() and rounds <= ROUNDS_TO_CHOOSE:
            self.start_round(LIVE_PROPOSER)
            rounds += 1
            deliveries += self.drain()
        return rounds, deliveries

    def chosen_by_acceptors(self) -> dict[Ballot, str]:
        """From the acceptors themselves: each ballot a majority has ever accepted."""
        acceptors_by_vote: dict[tuple[Ballot, str], set[str]] = {}
        for acceptor, ballot, value in self.accept_history:
            acceptors_by_vote.setdefault((ballot, value), set()).add(acceptor)
        majority = paxos.quorum(len(ACCEPTORS))
        return {b: v for (b, v), who in acceptors_by_vote.items() if len(who) >= majority}

    def all_learned(self) -> bool:
        return all(learner.chosen is not None for learner in self.learners.values())


def recipients(message: paxos.Message) -> tuple[str, ...]:
    if isinstance(message, paxos.Prepare | paxos.Accept):
        return ACCEPTORS
    if isinstance(message, paxos.Promise | paxos.Nack):
        return (message.ballot.proposer,)
    return LEARNERS


class PaxosUnderChaos(RuleBasedStateMachine):
    prepare_rule: PrepareRule = staticmethod(paxos.receive_prepare)
    accept_rule: AcceptRule = staticmethod(paxos.receive_accept)

    def __init__(self) -> None:
        super().__init__()
        self.cluster = SimulatedCluster(self.prepare_rule, self.accept_rule)

    @rule(proposer=st.sampled_from(sorted(PROPOSER_VALUES)))
    def proposer_starts_a_round(self, proposer: str) -> None:
        if self.cluster.may_time_out(proposer):
            self.cluster.start_round(proposer)

    @rule(picks=st.lists(st.integers(min_value=0), min_size=1, max_size=MAX_BURST))
    def deliver_some_messages(self, picks: list[int]) -> None:
        """A burst of deliveries in any order, so runs get far enough to choose a value."""
        for pick in picks:
            if self.cluster.network:
                self.cluster.deliver(pick % len(self.cluster.network))

    @rule(pick=st.integers(min_value=0), duplicate=st.booleans())
    def duplicate_or_lose_a_message(self, pick: int, duplicate: bool) -> None:
        network = self.cluster.network
        if not network:
            return
        if duplicate:
            network.append(network[pick % len(network)])
        else:
            network.pop(pick % len(network))

    @rule(acceptor=st.sampled_from(ACCEPTORS))
    def crash(self, acceptor: str) -> None:
        self.cluster.crashed.add(acceptor)

    @rule(acceptor=st.sampled_from(ACCEPTORS))
    def restart(self, acceptor: str) -> None:
        self.cluster.crashed.discard(acceptor)

    @invariant()
    def learners_never_learn_two_values(self) -> None:
        learned = {v for lr in self.cluster.learners.values() for v in lr.values_chosen().values()}
        assert len(learned) <= 1, f"learners learned {learned}"

    @invariant()
    def majority_accepted_ballots_carry_one_value(self) -> None:
        values = set(self.cluster.chosen_by_acceptors().values())
        assert len(values) <= 1, f"acceptor majorities accepted {values}"

    @invariant()
    def every_proposal_above_a_chosen_ballot_carries_its_value(self) -> None:
        """Lamport's P2b, which is what keeps the choice single; it fails sooner than it."""
        for chosen_ballot, chosen in self.cluster.chosen_by_acceptors().items():
            for ballot, value in self.cluster.proposals:
                assert ballot <= chosen_ballot or value == chosen, (
                    f"{chosen} accepted by a majority at {chosen_ballot}, "
                    f"{value} proposed at {ballot}"
                )

    def teardown(self) -> None:
        rounds, deliveries = self.cluster.stabilise()
        assert self.cluster.all_learned(), "no value chosen with one proposer and a majority"
        assert rounds <= ROUNDS_TO_CHOOSE
        assert deliveries <= rounds * DELIVERIES_PER_ROUND


CHAOS_SETTINGS = settings(
    max_examples=150,
    stateful_step_count=40,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_paxos_chooses_at_most_one_value_and_then_one_within_two_rounds():
    run_state_machine_as_test(PaxosUnderChaos, settings=CHAOS_SETTINGS)


def accept_below_promise(
    state: AcceptorState[Any], acceptor: str, accept: paxos.Accept[Any]
) -> tuple[AcceptorState[Any], tuple[paxos.Message, ...]]:
    """Broken: accepts a ballot lower than the one it promised."""
    vote = paxos.Vote(accept.ballot, accept.value)
    return AcceptorState(state.promised, vote), (
        paxos.Accepted(accept.ballot, acceptor, vote.value),
    )


def promise_forgetting_its_vote(
    state: AcceptorState[Any], acceptor: str, prepare: paxos.Prepare
) -> tuple[AcceptorState[Any], tuple[paxos.Message, ...]]:
    """Broken: promises without reporting the value it accepted."""
    state, replies = paxos.receive_prepare(state, acceptor, prepare)
    return state, tuple(
        paxos.Promise(r.ballot, r.acceptor, None) if isinstance(r, paxos.Promise) else r
        for r in replies
    )


@pytest.mark.parametrize(
    ("prepare_rule", "accept_rule"),
    [
        (paxos.receive_prepare, accept_below_promise),
        (promise_forgetting_its_vote, paxos.receive_accept),
    ],
    ids=["accepts-below-its-promise", "promise-forgets-its-vote"],
)
def test_a_broken_acceptor_is_caught(prepare_rule: PrepareRule, accept_rule: AcceptRule):
    class BrokenAcceptors(PaxosUnderChaos):
        pass

    BrokenAcceptors.prepare_rule = staticmethod(prepare_rule)
    BrokenAcceptors.accept_rule = staticmethod(accept_rule)
    without_shrinking = settings(CHAOS_SETTINGS, max_examples=600, phases=[Phase.generate])
    with pytest.raises(AssertionError, match=r"accepted|learned|proposed"):
        run_state_machine_as_test(BrokenAcceptors, settings=without_shrinking)
