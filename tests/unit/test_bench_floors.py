"""The bench report's floors: a missed synchronous target is set beside the naive baseline
against the same raw limit, and the msg rates beside the CPU ceilings of their processes."""

from __future__ import annotations

from typing import Any

import pytest

from infra.bench.report import floor_lines, gateway_rows

pytestmark = pytest.mark.unit

RAW = {
    "4db_xa": {"rounds_per_s": 1000.0},
    "4db_plain": {"rounds_per_s": 2000.0},
    "trivial_flask": {"rps": 2000.0},
}


def mode(rate: float, **cpu: float) -> dict[str, Any]:
    return {
        "available": True,
        "orders_per_s": rate,
        "cpu": {"cores": 2, "cpu_ms_per_order": cpu},
    }


def test_a_target_above_the_naive_baseline_is_floored_by_the_hops():
    orders = {"modes": {"naive": mode(140.0), "2pc": mode(100.0)}}
    (line,) = floor_lines(RAW, orders)
    assert line.startswith("2pc: target 0.15 x 4-DB XA = 150/s (1.07 x naive); measured 100/s")
    assert "naive 140/s = 0.140 x 4-DB XA" in line
    assert line.endswith("the floor is the hops")


def test_a_target_under_the_naive_baseline_is_the_protocols_cost():
    orders = {"modes": {"naive": mode(200.0), "2pc": mode(100.0)}}
    (line,) = floor_lines(RAW, orders)
    assert line.endswith("the protocol's own cost is the gap")


def test_a_met_target_has_no_floor_line():
    orders = {"modes": {"naive": mode(200.0), "2pc": mode(160.0), "tcc": mode(170.0)}}
    assert floor_lines(RAW, orders) == []


def msg_result(alone_per_s: float) -> dict[str, Any]:
    msg = mode(120.0, gateway=2.0, order=2.0, postgres=3.0)
    msg.update(
        accepted_per_s=120.0,
        settled_per_s=60.0,
        accept_alone={"accepted_per_s": alone_per_s},
        half_load={"target_rate": 30.0},
        p99_over_p50=4.5,
        cpu_ms_per_settled_order={
            "postgres": 10.0,
            "order-worker": 10.0,
            "other": 50.0,
            "load generator (wrk)": 1.0,
        },
    )
    return msg


def test_msg_accept_stands_beside_its_rate_with_settlement_paused():
    accept, _ = floor_lines(RAW, {"modes": {"msg": msg_result(400.0)}})
    assert accept.startswith("msg accept: 400/s with settlement paused = 0.200 x trivial")
    assert "the target holds when settlement has cores of its own" in accept
    assert "120/s with settlement on the same cores" in accept
    assert accept.endswith("gateway and order processes 4.0 ms CPU per order")
    slow, _ = floor_lines(RAW, {"modes": {"msg": msg_result(200.0)}})
    assert "0.100 x trivial (below the target even alone)" in slow


def test_msg_settle_is_capped_by_the_stacks_cpu_per_settled_order():
    _, settle = floor_lines(RAW, {"modes": {"msg": msg_result(400.0)}})
    assert "the whole stack 20.0 ms CPU per settled order" in settle  # others left out
    assert "at most 100/s = 0.050 x 4-DB plain on 2 cores; measured 60/s" in settle


def test_a_half_load_above_the_settle_ceiling_is_called_a_saturated_one():
    msg = msg_result(400.0)
    msg["half_load"]["target_rate"] = 120.0
    *_, half = floor_lines(RAW, {"modes": {"msg": msg}})
    assert half.startswith("msg half load: 120/s accepted is 2.00 x the 60/s the stack settles")
    assert "(measured 60/s, CPU cap 100/s)" in half
    assert half.endswith("(p99/p50 4.5) is a saturated machine's")


def test_a_half_load_near_the_measured_settle_rate_is_saturated_below_the_cpu_cap():
    msg = msg_result(400.0)
    msg["half_load"]["target_rate"] = 55.0
    *_, half = floor_lines(RAW, {"modes": {"msg": msg}})
    assert half.startswith("msg half load: 55/s accepted is 0.92 x the 60/s")
    msg["half_load"]["target_rate"] = 40.0  # 0.67 x: a tail of its own, no floor
    assert len(floor_lines(RAW, {"modes": {"msg": msg}})) == 2


def test_the_gateway_is_judged_on_the_median_of_its_rounds_ratios():
    gateway = {
        "rps_median": {"trivial": 3295.4, "cached": 2301.1, "limited": 2086.0},
        "rps_samples": {
            "trivial": [2728.0, 3295.0, 3509.0, 2674.0, 3640.0],
            "cached": [2492.0, 2283.0, 2476.0, 2245.0, 2301.0],
            "limited": [2136.0, 2404.0, 2032.0, 1995.0, 2086.0],
        },
        "cached_vs_trivial": 0.706,
        "limiter_cost": 0.111,
        "targets": {"cached_vs_trivial_min": 0.7, "limiter_cost_max": 0.1},
    }
    cached, limited = gateway_rows(gateway)
    assert cached.ratio == 0.706 and cached.failures() == []
    assert cached.note == "median of 5 rounds' ratios (0.63-0.91)"
    assert limited.ratio == pytest.approx(0.889)
    assert limited.failures() == ["gateway GET + rate limit: ratio below 0.9"]
