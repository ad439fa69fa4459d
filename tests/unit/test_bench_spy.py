"""The bench's py-spy runner: it says why it has no samples rather than guessing."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.bench import spy
from infra.bench.report import layer_table
from infra.bench.spy import Sampling, Spy, Target


def test_without_py_spy_the_sampling_is_unavailable_and_says_why(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(spy, "py_spy", lambda: None)
    with Spy([Target("order", 1)], 1, tmp_path) as sampler:
        assert sampler.pids == []
        sampling = sampler.finish()
    assert not sampling.available
    assert "not installed" in sampling.why


@pytest.mark.skipif(spy.py_spy() is None, reason="py-spy is not installed")
def test_a_process_py_spy_cannot_attach_to_is_reported_not_counted(tmp_path: Path) -> None:
    gone = Target("order", 2**22 + 12345)  # above the kernel's default pid_max
    with Spy([gone], 1, tmp_path) as sampler:
        sampling = sampler.finish()
    assert not sampling.available
    assert sampling.samples == {}
    assert sampling.failures[f"order pid {gone.pid}"].startswith("Error:")


def test_reason_is_py_spys_first_error_line() -> None:
    said = "Error: Failed to get process executable name.\n\nCaused by:\n    0: Error: x\n"
    assert spy._reason(said, 1) == "Error: Failed to get process executable name."
    assert spy._reason("", 1) == "py-spy wrote no samples (exit code 1)"


def test_the_report_says_why_a_mode_has_no_layer_table() -> None:
    layers = Sampling(False, "py-spy is not installed").as_json()
    assert layer_table("2pc", {"layers": layers}) == (
        "CPU by layer, 2pc: none (py-spy is not installed)"
    )


def test_the_report_prints_one_row_per_process_and_the_totals() -> None:
    split = {
        "rows": {"order": {"database": 2.0, "business": 1.0, "total": 3.0}},
        "totals": {"database": 2.0, "business": 1.0, "total": 3.0},
        "unsplit": {"coupon": 0.1},
    }
    layers = {
        **Sampling(True, samples={"order": {"database": 40, "business": 20}}).as_json(),
        "ms_per_order": split,
        "orders_per_s": 80.0,
        "profiler_cpu_ms_per_order": 1.5,
    }
    text = layer_table("2pc", {"layers": layers}).splitlines()
    assert text[1].strip().startswith("(a separate profiled run: 80.0 orders/s")
    cells = "order 0.00 0.00 2.00 0.00 0.00 0.00 1.00 0.00 3.00"
    assert text[3].split() == cells.split()
    assert text[4].split()[:2] == ["all", "sampled"]
    assert "coupon 0.10" in text[5]
