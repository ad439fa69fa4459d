"""The barrier's decision table, free of the database that feeds it."""

from __future__ import annotations

import pytest

from paxkit.barrier import BarrierRows, barrier_verdict


@pytest.mark.parametrize(
    ("op", "rows", "verdict"),
    [
        ("try", BarrierRows(own_new=True), ("applied", True, None)),
        ("action", BarrierRows(own_new=True), ("applied", True, None)),
        ("confirm", BarrierRows(own_new=True), ("applied", True, None)),
        ("try", BarrierRows(own_new=False, own_writer="try"), ("duplicate", True, None)),
        ("confirm", BarrierRows(own_new=False, own_writer="confirm"), ("duplicate", True, None)),
        # Hanging: the forward call arrives after its compensation wrote the row.
        ("try", BarrierRows(own_new=False, own_writer="cancel"), ("refused", False, "aborted")),
        (
            "action",
            BarrierRows(own_new=False, own_writer="compensate"),
            ("refused", False, "aborted"),
        ),
        ("cancel", BarrierRows(own_new=True, forward_new=False), ("applied", True, None)),
        ("compensate", BarrierRows(own_new=True, forward_new=False), ("applied", True, None)),
        # Null compensation: the forward operation never ran.
        ("cancel", BarrierRows(own_new=True, forward_new=True), ("null", True, None)),
        ("compensate", BarrierRows(own_new=True, forward_new=True), ("null", True, None)),
        ("cancel", BarrierRows(own_new=False, forward_new=False), ("duplicate", True, None)),
        ("compensate", BarrierRows(own_new=False, forward_new=True), ("duplicate", True, None)),
    ],
)
def test_the_barrier_decides(op, rows, verdict):
    outcome = barrier_verdict(op, rows)
    assert (outcome.effect, outcome.ok, outcome.reason) == verdict
