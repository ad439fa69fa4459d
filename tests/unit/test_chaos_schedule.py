"""The chaos schedule: short covers every scenario once; long replays from its seed."""

from __future__ import annotations

import pytest

from infra.chaos.schedule import ARM_AFTER_PAUSE_S, CATALOGUE, SERVER_OF, SETTLE_S, plan

KINDS = {
    "kill_web",
    "kill_worker",
    "pg_restart",
    "pg_stop",
    "rabbit_stop",
    "rabbit_kill",
    "redis_pause",
    "redis_restart",
    "point",
    "partition",
}


def test_short_runs_every_scenario_once_alone() -> None:
    short = plan("short", seed=1)
    assert [r.scenario for r in short.rounds] == list(CATALOGUE)
    assert {f.kind for r in short.rounds for f in r.faults} == KINDS
    assert any(r.duplicates for r in short.rounds)


def test_short_is_the_same_whatever_the_seed() -> None:
    assert plan("short", 1).rounds == plan("short", 2).rounds


def test_short_fits_in_ci() -> None:
    load_s = sum(r.load_s for r in plan("short", 0).rounds)
    assert load_s < 5 * 60


def test_long_replays_from_its_seed() -> None:
    assert plan("long", 42, minutes=21) == plan("long", 42, minutes=21)
    assert plan("long", 42, minutes=21).rounds != plan("long", 43, minutes=21).rounds


def test_long_fills_the_minutes_with_mixed_rounds() -> None:
    long = plan("long", 7, minutes=21)
    assert sum(r.load_s + SETTLE_S for r in long.rounds) >= 21 * 60
    assert any("+" in r.scenario for r in long.rounds)
    assert all(f.at_s >= 0 and f.hold_s >= 0 for r in long.rounds for f in r.faults)


def test_faults_end_within_their_round() -> None:
    for profile in ("short", "long"):
        for r in plan(profile, 5, minutes=30).rounds:
            assert all(f.at_s + f.hold_s <= r.load_s for f in r.faults), r


def test_long_stops_a_database_for_90_seconds() -> None:
    stops = [f for r in plan("long", 3, minutes=60).rounds for f in r.faults if f.kind == "pg_stop"]
    assert stops and all(f.hold_s == 90 for f in stops)


def test_no_long_round_mixes_two_scenarios_that_restart_one_server() -> None:
    """Seed 1696049755 once mixed rabbit-stop with rabbit-kill: the stop's end started
    RabbitMQ again while the kill's restart already ran it."""
    for seed in (1696049755, *range(200)):
        for chaos_round in plan("long", seed, 25).rounds:
            names = chaos_round.scenario.split("+")
            servers = [SERVER_OF[n] for n in names if n in SERVER_OF]
            assert len(servers) == len(set(servers)), (seed, chaos_round.scenario)


def test_no_fault_point_is_armed_while_redis_is_paused() -> None:
    """The points are armed through the chaos Redis: seed 718021772 armed four into a
    pause, each a timeout and a fault that never happened."""
    moved = 0
    for seed in (718021772, *range(200)):
        for chaos_round in plan("long", seed, 25).rounds:
            pauses = [f for f in chaos_round.faults if f.kind == "redis_pause"]
            points = [f for f in chaos_round.faults if f.kind == "point"]
            for pause, point in ((a, b) for a in pauses for b in points):
                assert not pause.at_s <= point.at_s <= pause.at_s + pause.hold_s, (seed, point)
                moved += point.at_s == pause.at_s + pause.hold_s + ARM_AFTER_PAUSE_S
    assert moved, "no seed mixed a pause with fault points: the test proves nothing"


def test_an_unknown_profile_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown chaos profile"):
        plan("medium", 1)
