"""What a chaos run does and when: rounds of load, each with its faults.

`short` runs every scenario once, alone, in a fixed order (CI). `long` draws rounds at
random from the seed it prints: each round mixes one to three scenarios with random
targets and times, until the rounds (with their expected settling) fill the minutes
asked. The plan is a function of (profile, seed, minutes) only: a seed replays it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace

COMPONENTS = ("gateway", "coordinator", "order", "inventory", "coupon", "redpacket")
PARTICIPANTS = ("inventory", "coupon", "redpacket")
PARTITIONED = "inventory"  # the participant behind the runner's proxy
# Fault points of the protocol steps (component, point, action), see paxkit/faults.py.
POINTS = (
    ("inventory", "after_prepare", "kill"),
    ("coupon", "before_prepare", "fail"),
    ("coordinator", "after_decision", "stall"),
    ("coordinator", "before_decision", "kill"),
    ("redpacket", "before_try", "fail"),
    ("coupon", "after_confirm", "kill"),
    ("inventory", "before_compensate", "fail"),
    ("order", "before_settle", "kill"),
    ("order", "relay_after_publish", "kill"),
    ("inventory", "consumer_after_commit", "kill"),
    ("order", "msg_before_commit", "kill"),
    ("redpacket", "before_commit", "fail"),
)
SLOW_POINTS = (("redpacket", "before_try"), ("redpacket", "before_prepare"))
STALL_S = 4.0
SLOW_S = 7.0  # past the branch timeout the chaos stack runs with
ARM_AFTER_PAUSE_S = 0.5  # a point due in a Redis pause is armed this long after it
SETTLE_S = 15.0  # what a round is expected to take to settle after its load (planning only)


@dataclass(frozen=True)
class Fault:
    """One fault: `kind` at `at_s` into its round on `target`, lasting `hold_s`."""

    kind: str  # kill_web | kill_worker | pg_restart | pg_stop | rabbit_stop | rabbit_kill |
    #            redis_pause | redis_restart | point | partition
    target: str
    at_s: float
    hold_s: float = 0.0
    point: str = ""
    action: str = ""
    times: int = 1
    seconds: float = 0.0

    @property
    def label(self) -> str:
        what = f"{self.target}.{self.point} {self.action}" if self.point else self.target
        return f"{self.kind} {what}"


@dataclass(frozen=True)
class Round:
    scenario: str
    load_s: float
    faults: tuple[Fault, ...] = ()
    duplicates: bool = False  # the Idempotency-Key storm: the load sends mostly retries


@dataclass(frozen=True)
class Plan:
    profile: str
    seed: int
    minutes: float
    rounds: tuple[Round, ...]


Scenario = Callable[[random.Random, bool], Round]


def _kills(kind: str) -> Scenario:
    def make(rng: random.Random, long: bool) -> Round:
        targets = list(COMPONENTS) * (2 if long else 1)
        if long:
            rng.shuffle(targets)
        faults = tuple(Fault(kind, t, 2 + 2.0 * i) for i, t in enumerate(targets))
        return Round(kind.replace("_", "-"), faults[-1].at_s + 6, faults)

    return make


def pg_restart(rng: random.Random, long: bool) -> Round:
    targets = rng.sample(COMPONENTS, 3) if long else ["coordinator", "inventory", "order"]
    faults = tuple(Fault("pg_restart", t, 3 + 6 * i) for i, t in enumerate(targets))
    return Round("pg-restart", 20, faults)


def pg_stop(rng: random.Random, long: bool) -> Round:
    target = rng.choice(COMPONENTS) if long else "coupon"
    hold = 90.0 if long else 20.0
    return Round("pg-stop", hold + 8, (Fault("pg_stop", target, 3, hold),))


def rabbit_stop(rng: random.Random, long: bool) -> Round:
    return Round("rabbit-stop", 16, (Fault("rabbit_stop", "rabbitmq", 3, 8),))


def rabbit_kill(rng: random.Random, long: bool) -> Round:
    return Round("rabbit-kill", 14, (Fault("rabbit_kill", "rabbitmq", 3, 4),))


def redis_pause(rng: random.Random, long: bool) -> Round:
    return Round("redis-pause", 14, (Fault("redis_pause", "redis", 3, 8),))


def redis_restart(rng: random.Random, long: bool) -> Round:
    return Round("redis-restart", 10, (Fault("redis_restart", "redis", 3),))


def fault_points(rng: random.Random, long: bool) -> Round:
    chosen = rng.sample(POINTS, 5) if long else list(POINTS)
    faults = tuple(
        Fault("point", c, 1 + i, point=p, action=a, times=2, seconds=STALL_S)
        for i, (c, p, a) in enumerate(chosen)
    )
    return Round("fault-points", len(chosen) + 10, faults)


def partition(rng: random.Random, long: bool) -> Round:
    hold = rng.uniform(8, 30) if long else 10.0
    return Round("partition", hold + 8, (Fault("partition", PARTITIONED, 3, hold),))


def idempotency(rng: random.Random, long: bool) -> Round:
    return Round("idempotency", 12, duplicates=True)


def slow_participant(rng: random.Random, long: bool) -> Round:
    faults = tuple(
        Fault("point", c, 2, point=p, action="stall", times=4, seconds=SLOW_S)
        for c, p in SLOW_POINTS
    )
    return Round("slow-participant", 16, faults)


CATALOGUE: dict[str, Scenario] = {
    "kill-web": _kills("kill_web"),
    "kill-worker": _kills("kill_worker"),
    "pg-restart": pg_restart,
    "pg-stop": pg_stop,
    "rabbit-stop": rabbit_stop,
    "rabbit-kill": rabbit_kill,
    "redis-pause": redis_pause,
    "redis-restart": redis_restart,
    "fault-points": fault_points,
    "partition": partition,
    "idempotency": idempotency,
    "slow-participant": slow_participant,
}


# Scenarios that stop and start the same server: two of them at once would start it
# twice (the second start finds the first one's server on its port), so no round mixes them.
SERVER_OF = {
    "pg-restart": "postgres",
    "pg-stop": "postgres",
    "rabbit-stop": "rabbitmq",
    "rabbit-kill": "rabbitmq",
    "redis-pause": "redis",
    "redis-restart": "redis",
}


def _compatible(rng: random.Random, count: int) -> list[str]:
    """`count` scenarios drawn at random, no two of which stop and start the same server."""
    names: list[str] = []
    for name in rng.sample(sorted(CATALOGUE), len(CATALOGUE)):
        server = SERVER_OF.get(name)
        if server is None or server not in {SERVER_OF.get(n) for n in names}:
            names.append(name)
        if len(names) == count:
            break
    return names


def _armed_after_redis_pauses(faults: tuple[Fault, ...]) -> tuple[Fault, ...]:
    """Fault points are armed through the chaos Redis, which a paused Redis cannot take:
    a point due while Redis is paused is armed as the pause ends (seed 718021772 once
    armed four points into a pause and lost them)."""
    pauses = [(f.at_s, f.at_s + f.hold_s) for f in faults if f.kind == "redis_pause"]

    def when(fault: Fault) -> float:
        for begins, ends in pauses:
            if fault.kind == "point" and begins <= fault.at_s <= ends:
                return ends + ARM_AFTER_PAUSE_S
        return fault.at_s

    return tuple(replace(f, at_s=when(f)) for f in faults)


def _mixed(rng: random.Random) -> Round:
    """One to three scenarios at once, each shifted to a random moment of the round."""
    names = _compatible(rng, rng.randint(1, 3))
    parts = [CATALOGUE[name](rng, True) for name in names]
    shifts = [rng.uniform(0, 10) for _ in parts]
    faults = _armed_after_redis_pauses(
        tuple(
            replace(f, at_s=f.at_s + shift)
            for part, shift in zip(parts, shifts, strict=True)
            for f in part.faults
        )
    )
    load_s = max(p.load_s + s for p, s in zip(parts, shifts, strict=True))
    duplicates = any(p.duplicates for p in parts)
    return Round("+".join(names), round(load_s, 1), faults, duplicates)


def plan(profile: str, seed: int, minutes: float | None = None) -> Plan:
    """The rounds of a run; `minutes` (long only) is the time the rounds should fill."""
    rng = random.Random(seed)
    if profile == "short":
        return Plan(profile, seed, 0.0, tuple(make(rng, False) for make in CATALOGUE.values()))
    if profile != "long":
        raise ValueError(f"unknown chaos profile {profile!r} (short or long)")
    budget = 60.0 * (minutes or 25.0)
    rounds: list[Round] = []
    while sum(r.load_s + SETTLE_S for r in rounds) < budget:
        rounds.append(_mixed(rng))
    return Plan(profile, seed, budget / 60, tuple(rounds))
