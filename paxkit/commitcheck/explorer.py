"""A breadth-first explorer of every run of a commit protocol, with its faults.

A `World` is everything at one instant: each process's local state, the messages in flight
(a set: a copy of a message in flight adds nothing), the crashed processes and the cut
links. From a world a step is one of:

- delivering any message in flight to its live recipient, in any order;
- a timeout of a process that waits on a peer which can no longer answer (crashed, or
  behind a cut link) and has nothing from it in flight: timeouts are accurate, so every
  bad run the explorer finds needs a real crash or partition;
- a fault, within a budget: a process crashes (for good; no recovery is modelled) or the
  link between the coordinator and one participant is cut, dropping what is in flight on
  it and everything sent on it later.

Worlds are deduplicated, so the search covers every interleaving up to its bounds; a bad
world is reported with a trace that needs the fewest faults and then the fewest steps.
Without faults every step consumes a message or moves a process forward (a step that
changes nothing is no step), so every run ends; a protocol can therefore block exactly
when a world is reachable in which no step but a fault is possible and a live participant
that voted yes is still undecided.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field, replace
from enum import Enum
from functools import cache
from itertools import chain

COORDINATOR = "coordinator"
PARTICIPANTS = ("p1", "p2", "p3")
DEFAULT_MAX_FAULTS = 2
DEFAULT_MAX_STATES = 2_000_000


class Outcome(Enum):
    COMMIT = "commit"
    ABORT = "abort"


@dataclass(frozen=True)
class Message:
    sender: str
    recipient: str
    payload: Hashable
    _hash: int = field(default=0, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.sender, self.recipient, self.payload)))

    def __hash__(self) -> int:
        return self._hash  # worlds hash their sets of messages over and over


@dataclass(frozen=True)
class Reaction:
    """One way a process can answer an event: its new state, what it sends, what it did."""

    state: Hashable
    sends: tuple[Message, ...] = ()
    note: str = ""


@dataclass(frozen=True)
class World:
    states: tuple[Hashable, ...]
    network: frozenset[Message]
    crashed: frozenset[str] = frozenset()
    cut: frozenset[str] = frozenset()  # participants cut off from the coordinator
    faults: int = 0
    _hash: int = field(default=0, compare=False, repr=False)

    def __post_init__(self) -> None:
        key = (self.states, self.network, self.crashed, self.cut, self.faults)
        object.__setattr__(self, "_hash", hash(key))

    def __hash__(self) -> int:
        return self._hash

    def linked(self, one: str, other: str) -> bool:
        """Whether the link between two processes is up (only coordinator links are cut)."""
        return COORDINATOR not in (one, other) or not {one, other} & self.cut

    def reachable(self, sender: str, recipient: str) -> bool:
        """Whether a message sent now from `sender` can still arrive."""
        return recipient not in self.crashed and self.linked(sender, recipient)

    def can_answer(self, peer: str, process: str) -> bool:
        """Whether `peer` could still send `process` anything."""
        return peer not in self.crashed and self.linked(peer, process)

    def heard_from(self, sender: str, recipient: str) -> bool:
        return any(m.sender == sender and m.recipient == recipient for m in self.network)


Peek = Callable[[str], Hashable]


class CommitProtocol(ABC):
    """One protocol: its processes and how each reacts. Participants are p1..p3."""

    name: str
    processes: tuple[str, ...]
    default_max_faults = DEFAULT_MAX_FAULTS

    @abstractmethod
    def initial_states(self) -> tuple[Hashable, ...]: ...

    @abstractmethod
    def initial_messages(self) -> frozenset[Message]: ...

    @abstractmethod
    def on_message(self, process: str, state: Hashable, message: Message) -> tuple[Reaction, ...]:
        """Every way `process` may react (a participant may vote yes or no); none: ignored."""

    def awaited(self, process: str, state: Hashable) -> tuple[str, ...]:
        """The peers whose silence `process` would time out on."""
        return ()

    def on_timeout(self, process: str, state: Hashable) -> Reaction | None:
        """What `process` does when an awaited peer can no longer answer; None: it waits on."""
        return None

    @abstractmethod
    def outcome(self, participant: str, state: Hashable) -> Outcome | None: ...

    @abstractmethod
    def in_doubt(self, participant: str, state: Hashable) -> bool:
        """Voted yes and not yet told the outcome."""

    def may_crash(self, process: str, crashed: frozenset[str]) -> bool:
        return True

    def may_cut(self, participant: str, cut: frozenset[str]) -> bool:
        return True

    def spontaneous(self, process: str, state: Hashable, peek: Peek) -> Reaction | None:
        """A step `process` may take on its own, reading other processes' state with `peek`."""
        return None

    def answers_at_once(self, message: Message) -> bool:
        """A reply delivered in the same step as the request it answers (an RPC)."""
        return False

    def is_final(self, process: str, state: Hashable) -> bool:
        """Whether `process` ignores every message from now on (then none is kept for it)."""
        return False

    def describe(self, payload: Hashable) -> str:
        return payload.value if isinstance(payload, Enum) else str(payload)


@dataclass(frozen=True)
class Step:
    label: str
    world: World
    is_fault: bool = False


@dataclass(frozen=True)
class Trace:
    steps: tuple[str, ...]
    outcomes: tuple[tuple[str, str], ...]  # each participant and what it ended in

    def lines(self) -> list[str]:
        numbered = [f"{n:3}. {step}" for n, step in enumerate(self.steps, 1)]
        return [*numbered, "     => " + ", ".join(f"{p} {what}" for p, what in self.outcomes)]


@dataclass(frozen=True)
class Report:
    protocol: str
    worlds: int
    complete: bool
    inconsistency: Trace | None
    blocking: Trace | None

    @property
    def consistent(self) -> bool:
        return self.inconsistency is None

    @property
    def can_block(self) -> bool:
        return self.blocking is not None


class Explorer:
    def __init__(
        self,
        protocol: CommitProtocol,
        max_faults: int = DEFAULT_MAX_FAULTS,
        max_states: int = DEFAULT_MAX_STATES,
    ) -> None:
        self.protocol = protocol
        self.max_faults = max_faults
        self.max_states = max_states
        self.index = {name: i for i, name in enumerate(protocol.processes)}

    def initial(self) -> World:
        protocol = self.protocol
        return World(protocol.initial_states(), protocol.initial_messages())

    def run(self) -> Report:
        start = self.initial()
        parents: dict[World, tuple[World, str] | None] = {start: None}
        queue = deque([start])
        inconsistent: World | None = None
        blocked: World | None = None
        while queue and len(parents) < self.max_states:
            world = queue.popleft()
            if self.is_inconsistent(world):
                inconsistent = fewer_faults(inconsistent, world)
            steps = list(self.steps(world))
            if self.is_blocked(world, steps):
                blocked = fewer_faults(blocked, world)
            for step in steps:
                if step.world not in parents:
                    parents[step.world] = (world, step.label)
                    queue.append(step.world)
        return Report(
            self.protocol.name,
            len(parents),
            not queue,
            self.trace(parents, inconsistent),
            self.trace(parents, blocked),
        )

    def steps(self, world: World) -> Iterator[Step]:
        """Every step that changes the world (one that changes nothing is no step)."""
        faults = self.faults(world) if world.faults < self.max_faults else iter(())
        for step in chain(self.deliveries(world), self.timeouts(world), faults):
            if step.world != world:
                yield step

    def deliveries(self, world: World) -> Iterator[Step]:
        for message in sorted(world.network, key=order_key):
            if message.recipient in world.crashed:
                continue
            arrived = replace(world, network=world.network - {message})
            label = f"{message.sender} -> {message.recipient}: "
            label += self.protocol.describe(message.payload)
            state = self.state_of(world, message.recipient)
            reactions = self.protocol.on_message(message.recipient, state, message)
            if not reactions:
                yield Step(label, arrived)
            for reaction in reactions:
                note = f" ({message.recipient} {reaction.note})" if reaction.note else ""
                yield Step(label + note, self.react(arrived, message.recipient, reaction))

    def timeouts(self, world: World) -> Iterator[Step]:
        for process in self.protocol.processes:
            if process in world.crashed:
                continue
            state = self.state_of(world, process)
            if self.hears_nothing(world, process):
                reaction = self.protocol.on_timeout(process, state)
                if reaction is not None:
                    label = f"{process} timeout: {reaction.note}"
                    yield Step(label, self.react(world, process, reaction))
            peek = self.peek(world)
            on_its_own = self.protocol.spontaneous(process, state, peek)
            if on_its_own is not None:
                yield Step(f"{process} {on_its_own.note}", self.react(world, process, on_its_own))

    def peek(self, world: World) -> Peek:
        """Live processes' states; a crashed one shows None (its records cannot be read)."""
        return lambda name: None if name in world.crashed else self.state_of(world, name)

    def hears_nothing(self, world: World, process: str) -> bool:
        awaited = self.protocol.awaited(process, self.state_of(world, process))
        return any(
            not world.can_answer(peer, process) and not world.heard_from(peer, process)
            for peer in awaited
        )

    def faults(self, world: World) -> Iterator[Step]:
        for process in self.protocol.processes:
            if process not in world.crashed and self.protocol.may_crash(process, world.crashed):
                yield Step(f"crash {process}", self.crash(world, process), is_fault=True)
        for participant in PARTICIPANTS:
            if participant not in world.cut and self.protocol.may_cut(participant, world.cut):
                yield Step(
                    f"partition {COORDINATOR}|{participant}",
                    self.partition(world, participant),
                    is_fault=True,
                )

    def crash(self, world: World, process: str) -> World:
        crashed = world.crashed | {process}
        network = frozenset(m for m in world.network if m.recipient != process)
        return replace(world, crashed=crashed, network=network, faults=world.faults + 1)

    def partition(self, world: World, participant: str) -> World:
        cut = replace(world, cut=world.cut | {participant}, faults=world.faults + 1)
        network = frozenset(m for m in world.network if cut.reachable(m.sender, m.recipient))
        return replace(cut, network=network)

    def react(self, world: World, process: str, reaction: Reaction) -> World:
        at_once = [m for m in reaction.sends if self.protocol.answers_at_once(m)]
        later = tuple(m for m in reaction.sends if m not in at_once)
        world = self.apply(world, process, replace(reaction, sends=later))
        for reply in at_once:
            if world.reachable(reply.sender, reply.recipient):
                state = self.state_of(world, reply.recipient)
                for answer in self.protocol.on_message(reply.recipient, state, reply)[:1]:
                    world = self.react(world, reply.recipient, answer)
        return world

    def apply(self, world: World, process: str, reaction: Reaction) -> World:
        states = list(world.states)
        states[self.index[process]] = reaction.state
        network = world.network | frozenset(reaction.sends)
        if self.protocol.is_final(process, reaction.state):
            network = frozenset(m for m in network if m.recipient != process)
        kept = frozenset(m for m in network if self.keeps(world, states, m))
        if self.all_settled(world, states):
            kept = frozenset()  # nothing left can change what any participant ends in
        return replace(world, states=tuple(states), network=kept)

    def all_settled(self, world: World, states: list[Hashable]) -> bool:
        protocol = self.protocol
        return all(
            p in world.crashed or protocol.outcome(p, states[self.index[p]]) is not None
            for p in PARTICIPANTS
        )

    def keeps(self, world: World, states: list[Hashable], message: Message) -> bool:
        """A message that can still arrive at a process that may still heed it."""
        recipient = message.recipient
        if not world.reachable(message.sender, recipient):
            return False
        return not self.protocol.is_final(recipient, states[self.index[recipient]])

    def state_of(self, world: World, process: str) -> Hashable:
        return world.states[self.index[process]]

    def is_inconsistent(self, world: World) -> bool:
        outcomes = {self.protocol.outcome(p, self.state_of(world, p)) for p in PARTICIPANTS}
        return {Outcome.COMMIT, Outcome.ABORT} <= outcomes

    def is_blocked(self, world: World, steps: list[Step]) -> bool:
        if any(not step.is_fault for step in steps):
            return False
        return any(
            p not in world.crashed and self.protocol.in_doubt(p, self.state_of(world, p))
            for p in PARTICIPANTS
        )

    def trace(
        self, parents: dict[World, tuple[World, str] | None], end: World | None
    ) -> Trace | None:
        if end is None:
            return None
        labels: list[str] = []
        link = parents[end]
        while link is not None:
            world, label = link
            labels.append(label)
            link = parents[world]
        return Trace(tuple(reversed(labels)), self.outcomes(end))

    def outcomes(self, world: World) -> tuple[tuple[str, str], ...]:
        described = []
        for p in PARTICIPANTS:
            state = self.state_of(world, p)
            what = self.protocol.outcome(p, state)
            if what is not None:
                shown = "committed" if what is Outcome.COMMIT else "aborted"
            else:
                shown = "in doubt" if self.protocol.in_doubt(p, state) else "undecided"
            described.append((p, shown + (" (crashed)" if p in world.crashed else "")))
        return tuple(described)


@cache
def order_key(message: Message) -> str:
    """A stable order of delivery (set order changes with the hash seed), so traces repeat."""
    return repr(message)


def fewer_faults(found: World | None, candidate: World) -> World:
    """The bad world kept: the one needing fewest faults, then (breadth first) fewest steps."""
    return candidate if found is None or candidate.faults < found.faults else found


def explore(protocol: CommitProtocol, max_faults: int | None = None) -> Report:
    faults = protocol.default_max_faults if max_faults is None else max_faults
    return Explorer(protocol, faults).run()
