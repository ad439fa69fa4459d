"""The scenarios' pure parts: the recording, its space-time diagram, and the session
guarantee checks their verdicts rest on."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from infra.scenarios.catalog import SCENARIOS, by_name
from infra.scenarios.play import Verdict
from infra.scenarios.sessions import Read, regressions, stale_reads
from paxkit.spacetime.diagram import render_svg, render_text
from paxkit.spacetime.record import Recording

SVG = "{http://www.w3.org/2000/svg}"


def two_lane_recording() -> Recording:
    recording = Recording(started_at=100.0)
    recording.message("coordinator", "inventory", "prepare ok", 100.5, 101.0)
    recording.mark("inventory", "PREPARED <holds 2 locks>", "prepare", at=101.0)
    recording.mark("coordinator", "SIGKILL", "crash", at=102.0)
    recording.message("coordinator", "inventory", "rollback", 104.0, 104.2, ok=False)
    return recording


def test_the_diagram_is_svg_with_a_lane_per_process_and_every_label_escaped():
    svg = render_svg(two_lane_recording(), "2PC & friends", "VERDICT PASS x: <ok>")
    root = ET.fromstring(svg)
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert {"coordinator", "inventory"} <= set(texts)
    assert "PREPARED <holds 2 locks>" in texts and "2PC & friends" in texts
    assert "VERDICT PASS x: <ok>" in texts
    arrows = [line for line in root.iter(f"{SVG}line") if line.get("marker-end")]
    assert len(arrows) == 2
    assert [a.get("stroke-dasharray") for a in arrows] == [None, "5,3"]


def test_the_diagram_places_later_events_further_right():
    root = ET.fromstring(render_svg(two_lane_recording(), "t", "v"))
    arrows = [line for line in root.iter(f"{SVG}line") if line.get("marker-end")]
    first, second = (float(a.get("x2", "0")) for a in arrows)
    assert first < second


def test_the_timeline_lists_events_in_time_order_from_the_start():
    lines = render_text(two_lane_recording()).splitlines()
    assert lines[0].split()[0] == "+0.500s" and "prepare ok" in lines[0] + lines[1]
    assert "SIGKILL" in lines[2]
    assert lines[-1].endswith("(failed)")


def test_an_unknown_mark_kind_is_refused():
    with pytest.raises(ValueError, match="unknown mark kind"):
        Recording().mark("x", "y", "explodes")


def reads(*stocks: int) -> list[Read]:
    return [Read(float(i), stock, "HIT") for i, stock in enumerate(stocks)]


def test_a_read_showing_more_stock_than_an_earlier_one_went_back_in_time():
    found = regressions(reads(10, 9, 9, 10, 9))
    assert [(a.stock, b.stock, b.at) for a, b in found] == [(9, 10, 3.0)]
    assert regressions(reads(10, 10, 9, 9)) == []


def test_reads_not_showing_the_clients_write_before_the_window_ends_are_stale():
    assert [r.at for r in stale_reads(reads(10, 9, 10, 10), written=9, until=3.0)] == [0.0, 2.0]


def test_every_scenario_the_issue_names_is_there_once():
    names = [s.name for s in SCENARIOS]
    assert len(names) == len(set(names))
    for name in (
        "2pc-coordinator-crash",
        "3pc-partition",
        "paxos-coordinator-crash",
        "lock-pause-no-fencing",
        "lock-pause-fencing",
        "read-your-writes",
        "monotonic-reads",
        "peak-shaving",
    ):
        assert by_name(name).name == name


def test_a_verdict_line_says_pass_or_fail_and_the_scenario():
    assert Verdict(True, "held").line("x") == "VERDICT PASS x: held"
    assert Verdict(False, "broke").line("y") == "VERDICT FAIL y: broke"


def test_a_call_made_again_is_labelled_with_its_attempt():
    recording = Recording(started_at=100.0)
    at = "2026-01-01T00:00:0{}+00:00"
    recording.coordinator_timeline(
        {
            "mode": "2pc",
            "timeline": [
                {"branch": "coupon", "op": "prepare", "outcome": "ok", "at": at.format(1)},
                {"branch": "coupon", "op": "commit", "outcome": "timeout", "at": at.format(2)},
                {"branch": "coupon", "op": "commit", "outcome": "ok", "at": at.format(3)},
                {"branch": "2pc", "op": "decide", "outcome": "ok", "at": at.format(4)},
            ],
        }
    )
    assert [m.label for m in recording.messages] == ["prepare ok", "commit timeout", "commit #2 ok"]
    assert [(m.lane, m.label, m.kind) for m in recording.marks] == [
        ("coordinator", "decide ok", "commit")
    ]
