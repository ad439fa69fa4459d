"""Paxos acceptors, each in a database of its own, and the rounds a proposer runs over them
(Paxos Commit, Gray and Lamport 2004). Every protocol decision is paxkit/paxos.py's; this
module stores its states, carries its messages and bounds every call.

An acceptor holds one row per instance (a global transaction, by its gtid): the state of
`AcceptorState.to_record()`, the instance's members (branch names, written when it is
registered, so whoever takes it over needs no coordinator log) and `decided`, the value
once someone learned it, so the takeover sweep skips the row. Each step is one short
local transaction in the acceptor's database: the row read FOR UPDATE, the pure
transition, the new state stored and the reply returned, under a statement timeout.

A round sends one message to every acceptor at once, each call bounded by the timeout,
and ends as soon as its outcome is known: a majority is enough. An acceptor that does not
answer (down, slow, its message lost) is one answer fewer, nothing more.

Fault points (paxkit.faults, the owner's component): `paxos_<op>_<acceptor>` before each
call to an acceptor, op one of register, prepare, accept, known, list, mark; `fail` loses that
message, `stall` delays it.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from paxkit import paxos
from paxkit.config import Settings
from paxkit.db import Database, abort, make_engine, run
from paxkit.faults import Faults
from paxkit.paxos import (
    Accept,
    Accepted,
    AcceptorState,
    Ballot,
    LearnerState,
    Nack,
    Prepare,
    Promise,
    ProposerState,
)
from paxkit.retention import OLDER_THAN_HORIZON, OldRows, Rule

log = logging.getLogger(__name__)

COMMIT = "commit"
ABORT = "abort"
# A takeover outbids refusals this many times, then leaves the instance to a later pass
# (whose jitter lets duelling proposers drift apart).
TAKEOVER_ROUNDS = 3
# Connections per acceptor database and process (as many again on overflow).
POOL_SIZE = 8
# The members and the state of one instance; the row made first if it is new.
LOCK_ROW = (
    "BEGIN; SELECT set_config('statement_timeout', :timeout, true), "
    "set_config('lock_timeout', :timeout, true); "
    "INSERT INTO paxos_instances (instance) VALUES (:instance) "
    "ON CONFLICT (instance) DO NOTHING; "
    "SELECT promised_round, promised_by, accepted_round, accepted_by, accepted_value, members "
    "FROM paxos_instances WHERE instance = :instance FOR UPDATE"
)
STORE_AND_COMMIT = (
    "UPDATE paxos_instances SET promised_round = :promised_round, promised_by = :promised_by, "
    "accepted_round = :accepted_round, accepted_by = :accepted_by, "
    "accepted_value = :accepted_value, updated_at = now() WHERE instance = :instance; COMMIT"
)
REGISTER = (
    "SELECT set_config('statement_timeout', :timeout, true); "
    "INSERT INTO paxos_instances (instance, members) VALUES (:instance, CAST(:members AS jsonb)) "
    "ON CONFLICT (instance) DO UPDATE SET members = EXCLUDED.members, updated_at = now() "
    "WHERE paxos_instances.members = '[]'::jsonb"
)
MARK_DECIDED = (
    "SELECT set_config('statement_timeout', :timeout, true); "
    "UPDATE paxos_instances p SET decided = d.value, updated_at = now() "
    "FROM jsonb_each_text(CAST(:decided AS jsonb)) AS d(instance, value) "
    "WHERE p.instance = d.instance AND p.decided IS NULL"
)
UNDECIDED = (
    "SELECT instance, members FROM paxos_instances WHERE decided IS NULL "
    "AND created_at < now() - make_interval(secs => :age) ORDER BY created_at LIMIT :limit"
)
# Retention: a decided instance is needed by nobody once older than the horizon (a late
# message of it could only meet a fresh row: by then nobody proposes for it any more).
ACCEPTOR_RETENTION: tuple[Rule, ...] = (
    OldRows("paxos_instances", f"t.decided IS NOT NULL AND t.updated_at {OLDER_THAN_HORIZON}"),
)

R = TypeVar("R")


@functools.cache
def _proposer_of(pid: int) -> str:
    return f"{socket.gethostname()}-{pid}-{secrets.token_hex(4)}"


def proposer_id() -> str:
    """This process's proposer id, unique among all proposers (a forked child gets its own)."""
    return _proposer_of(os.getpid())


@dataclass(frozen=True)
class PhaseOne:
    """An acceptor's answer to a Prepare, with the members it was told of."""

    reply: Promise[str] | Nack
    members: tuple[str, ...]


class Acceptor(Protocol):
    """One acceptor; each call is one step, and may raise when the acceptor can't answer."""

    name: str

    def register(self, instance: str, members: Sequence[str]) -> None: ...

    def prepare(self, instance: str, message: Prepare) -> PhaseOne: ...

    def accept(self, instance: str, message: Accept[str]) -> Accepted[str] | Nack: ...

    def known(self, instances: Sequence[str]) -> set[str]:
        """Which of these instances it holds a row of."""

    def undecided(self, older_than_s: float, limit: int) -> dict[str, tuple[str, ...]]:
        """Instances not known decided, older than `older_than_s`, with their members."""

    def mark_decided(self, decided: Mapping[str, str]) -> None: ...


class SqlAcceptor:
    """One acceptor in its own database (paxkit/sql_acceptor)."""

    def __init__(self, name: str, db: Database, timeout_s: float) -> None:
        self.name = name
        self.db = db
        self.timeout = f"{max(1, int(timeout_s * 1000))}ms"

    def register(self, instance: str, members: Sequence[str]) -> None:
        params = {"instance": instance, "members": json.dumps(list(members))}
        with self.db.autocommit() as conn:
            run(conn, REGISTER, {**params, "timeout": self.timeout})

    def prepare(self, instance: str, message: Prepare) -> PhaseOne:
        members, replies = self._step(
            instance, lambda state: paxos.receive_prepare(state, self.name, message)
        )
        (reply,) = replies
        assert isinstance(reply, Promise | Nack)
        return PhaseOne(reply, members)

    def accept(self, instance: str, message: Accept[str]) -> Accepted[str] | Nack:
        _, replies = self._step(
            instance, lambda state: paxos.receive_accept(state, self.name, message)
        )
        (reply,) = replies
        assert isinstance(reply, Accepted | Nack)
        return reply

    def _step(
        self,
        instance: str,
        transition: Callable[
            [AcceptorState[str]], tuple[AcceptorState[str], tuple[paxos.Message, ...]]
        ],
    ) -> tuple[tuple[str, ...], tuple[paxos.Message, ...]]:
        """Read the row FOR UPDATE, apply the pure transition, store what changed, commit."""
        params = {"instance": instance, "timeout": self.timeout}
        with self.db.autocommit() as conn:
            try:
                row = run(conn, LOCK_ROW, params).mappings().one()
                state: AcceptorState[str] = AcceptorState.from_record(dict(row))
                new, replies = transition(state)
                if new != state:
                    run(conn, STORE_AND_COMMIT, {"instance": instance, **new.to_record()})
                else:
                    conn.exec_driver_sql("COMMIT")
            except BaseException:
                abort(conn)
                raise
        return tuple(row["members"]), replies

    def known(self, instances: Sequence[str]) -> set[str]:
        rows = self.db.fetch_all(
            "SELECT instance FROM paxos_instances WHERE instance = ANY(:instances)",
            instances=list(instances),
        )
        return {r["instance"] for r in rows}

    def undecided(self, older_than_s: float, limit: int) -> dict[str, tuple[str, ...]]:
        rows = self.db.fetch_all(UNDECIDED, age=older_than_s, limit=limit)
        return {r["instance"]: tuple(r["members"]) for r in rows}

    def mark_decided(self, decided: Mapping[str, str]) -> None:
        params = {"decided": json.dumps(dict(decided)), "timeout": self.timeout}
        with self.db.autocommit() as conn:
            run(conn, MARK_DECIDED, params)


def sql_acceptors(settings: Settings) -> list[SqlAcceptor]:
    """The stack's acceptors, each on its own database (no connection opened yet)."""
    return [
        SqlAcceptor(
            name,
            Database(make_engine(settings.db_urls[name], pool_size=POOL_SIZE)),
            settings.acceptor_timeout_s,
        )
        for name in settings.acceptors
    ]


@dataclass(frozen=True)
class Step:
    """One acceptor's part in a round, for the transaction's timeline."""

    acceptor: str
    op: str  # register, promise, accept; or `chosen`, by the learner
    outcome: str  # ok, nack, unavailable
    detail: str | None = None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True)
class Learned:
    """What a proposer's rounds found: the value chosen (None: too few acceptors answered,
    nothing is decided yet), the members the acceptors reported, and every step."""

    value: str | None
    ballot: Ballot | None
    members: tuple[str, ...]
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class _Answers:
    """A round's replies by acceptor, and why the others did not answer (those the round
    stopped waiting for once it knew its outcome are in neither)."""

    replies: dict[str, Any]
    silent: dict[str, str]

    def steps(self, op: str) -> tuple[Step, ...]:
        return tuple(Step(name, op, "unavailable", why) for name, why in self.silent.items())


LEARNER = "paxos"  # the timeline's name for the learner's `chosen` entry


class Acceptors:
    """The 2F+1 acceptors of every instance, and the rounds a proposer runs over them."""

    def __init__(
        self, members: Sequence[Acceptor], pool: Executor, timeout_s: float, faults: Faults
    ) -> None:
        self.members = tuple(members)
        self.pool = pool
        self.timeout_s = timeout_s
        self.faults = faults

    @property
    def count(self) -> int:
        return len(self.members)

    @property
    def quorum(self) -> int:
        return paxos.quorum(self.count)

    def register(self, instance: str, members: Sequence[str]) -> tuple[bool, tuple[Step, ...]]:
        """Tell the acceptors the instance's members before any branch is prepared: True
        when a majority holds them (every later majority then includes one that does)."""
        answers = self._round(
            "register",
            lambda acceptor: acceptor.register(instance, members),
            lambda replies: len(replies) >= self.quorum,
        )
        ok = tuple(Step(name, "register", "ok") for name in answers.replies)
        return len(answers.replies) >= self.quorum, ok + answers.steps("register")

    def propose_first(self, instance: str, proposer: str, value: str) -> Learned:
        """Ballot 0, owned by the instance's first coordinator: no lower ballot exists, so
        nothing can have been chosen and phase 1 is skipped (Gray and Lamport)."""
        _, (accept,) = paxos.skip_to_round_zero(ProposerState(proposer, value, self.count))
        learned, _ = self._accept_round(instance, accept)
        return learned

    def take_over(self, instance: str, proposer: str, value: str = ABORT) -> Learned:
        """Finish an instance someone else began: phase 1 with a ballot above any seen, then
        phase 2 with the highest-ballot value among the promises (the only one that may have
        been chosen), else `value`; outbidding refusals for a few rounds."""
        state: ProposerState[str] = ProposerState(proposer, value, self.count)
        steps: list[Step] = []
        members: set[str] = set()
        for _ in range(TAKEOVER_ROUNDS):
            state, (prepare,) = paxos.start_round(state)
            answers = self._promises(instance, prepare)
            phase_one: list[PhaseOne] = list(answers.replies.values())
            members.update(m for reply in phase_one for m in reply.members)
            steps += [_promise_step(r.reply) for r in phase_one] + list(answers.steps("promise"))
            accept: Accept[str] | None = None
            for reply in phase_one:
                if isinstance(reply.reply, Promise):
                    state, sent = paxos.receive_promise(state, reply.reply)
                    accept = sent[0] if sent else accept
            state = _outbid(state, [r.reply for r in phase_one])
            if accept is None:
                if not any(isinstance(r.reply, Nack) for r in phase_one):
                    break  # too few acceptors answer: nothing to outbid, try again later
                continue
            learned, nacks = self._accept_round(instance, accept)
            steps += learned.steps
            if learned.value is not None:
                return Learned(learned.value, learned.ballot, tuple(sorted(members)), tuple(steps))
            state = _outbid(state, nacks)
            if not nacks:
                break
        return Learned(None, None, tuple(sorted(members)), tuple(steps))

    def _promises(self, instance: str, prepare: Prepare) -> _Answers:
        """Phase 1, until a majority promised or refused."""
        return self._round(
            "prepare", lambda acceptor: acceptor.prepare(instance, prepare), self._settled
        )

    def known(self, instances: Sequence[str]) -> set[str] | None:
        """Which of these instances any acceptor holds; None when too few answer to tell (a
        registered instance is at a majority, so any majority has one that holds it)."""
        answers = self._round("known", lambda acceptor: acceptor.known(instances), lambda _: False)
        if len(answers.replies) < self.quorum:
            return None
        return set().union(*answers.replies.values())

    def undecided(self, older_than_s: float, limit: int) -> dict[str, tuple[str, ...]]:
        """Instances some acceptor does not know decided, older than `older_than_s`, with
        every member any of them was told of."""
        answers = self._round(
            "list", lambda acceptor: acceptor.undecided(older_than_s, limit), lambda _: False
        )
        merged: dict[str, set[str]] = {}
        for found in answers.replies.values():
            for instance, members in found.items():
                merged.setdefault(instance, set()).update(members)
        return {instance: tuple(sorted(members)) for instance, members in merged.items()}

    def mark_decided(self, decided: Mapping[str, str]) -> None:
        """Best effort: an acceptor that misses it is told again by a later sweep."""
        if decided:
            self._round("mark", lambda acceptor: acceptor.mark_decided(decided), lambda _: False)

    def _accept_round(self, instance: str, accept: Accept[str]) -> tuple[Learned, list[paxos.Nack]]:
        """Phase 2, and the learner over its Accepted replies."""

        def learner(replies: Mapping[str, Any]) -> LearnerState[str]:
            state: LearnerState[str] = LearnerState(self.count)
            for reply in replies.values():
                if isinstance(reply, Accepted):
                    state = paxos.receive_accepted(state, reply)
            return state

        answers = self._round(
            "accept",
            lambda acceptor: acceptor.accept(instance, accept),
            lambda replies: learner(replies).chosen is not None or self._settled(replies),
        )
        replies = list(answers.replies.values())
        steps = [_accept_step(r) for r in replies] + list(answers.steps("accept"))
        chosen = learner(answers.replies).chosen
        if chosen is not None:
            by = ", ".join(sorted(r.acceptor for r in replies if isinstance(r, Accepted)))
            steps.append(
                Step(LEARNER, "chosen", "ok", f"{chosen} at ballot {accept.ballot} ({by})")
            )
        nacks = [r for r in replies if isinstance(r, Nack)]
        ballot = accept.ballot if chosen is not None else None
        return Learned(chosen, ballot, (), tuple(steps)), nacks

    def _settled(self, replies: Mapping[str, Any]) -> bool:
        """A majority promised (or accepted), or so many refused that none can."""
        nacks = sum(1 for r in replies.values() if isinstance(_message(r), Nack))
        return len(replies) - nacks >= self.quorum or nacks > self.count - self.quorum

    def _round(
        self,
        op: str,
        call: Callable[[Acceptor], R],
        enough: Callable[[dict[str, R]], bool],
    ) -> _Answers:
        """Send to every acceptor at once; collect replies until `enough`, all of them, or
        the timeout, whichever comes first."""
        futures: dict[Future[R], str] = {
            self.pool.submit(self._call, op, acceptor, call): acceptor.name
            for acceptor in self.members
        }
        replies: dict[str, R] = {}
        silent: dict[str, str] = {}
        pending = set(futures)
        deadline = time.monotonic() + self.timeout_s
        while pending and not enough(replies):
            left = deadline - time.monotonic()
            done, pending = wait(pending, timeout=max(0.0, left), return_when=FIRST_COMPLETED)
            if not done:
                break
            for future in done:
                error = future.exception()
                if error is None:
                    replies[futures[future]] = future.result()
                else:
                    silent[futures[future]] = repr(error)[:200]
        if not enough(replies):
            silent.update({futures[f]: f"no answer within {self.timeout_s:g}s" for f in pending})
        return _Answers(replies, silent)

    def _call(self, op: str, acceptor: Acceptor, call: Callable[[Acceptor], R]) -> R:
        self.faults.hit(f"paxos_{op}_{acceptor.name}")
        try:
            return call(acceptor)
        except Exception as err:
            log.warning("acceptor %s did not answer %s: %r", acceptor.name, op, err)
            raise


def _message(reply: Any) -> Any:
    return reply.reply if isinstance(reply, PhaseOne) else reply


def _outbid(state: ProposerState[str], replies: Sequence[Any]) -> ProposerState[str]:
    """Remember every refusal's ballot, so the next round starts above it."""
    for reply in replies:
        if isinstance(reply, Nack):
            state = paxos.receive_nack(state, reply)
    return state


def _promise_step(reply: Promise[str] | Nack) -> Step:
    if isinstance(reply, Nack):
        return _nack_step("promise", reply)
    vote = reply.accepted
    had = f"accepted {vote.value} at {vote.ballot}" if vote else "nothing accepted"
    return Step(reply.acceptor, "promise", "ok", f"ballot {reply.ballot}; {had}")


def _accept_step(reply: Accepted[str] | Nack) -> Step:
    if isinstance(reply, Nack):
        return _nack_step("accept", reply)
    return Step(reply.acceptor, "accept", "ok", f"{reply.value} at ballot {reply.ballot}")


def _nack_step(op: str, nack: Nack) -> Step:
    detail = f"ballot {nack.ballot} refused: promised {nack.promised}"
    return Step(nack.acceptor, op, "nack", detail)
