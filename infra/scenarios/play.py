"""One scenario run: its stacks (one per act), its recording, its verdict, its files."""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from infra.scenarios.stage import ScenarioFailed, Stage, StageSpec
from paxkit.spacetime.diagram import render_svg, render_text
from paxkit.spacetime.record import Recording

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    """What the scenario expected to see, and whether it did."""

    passed: bool
    summary: str

    def line(self, name: str) -> str:
        return f"VERDICT {'PASS' if self.passed else 'FAIL'} {name}: {self.summary}"


class Run:
    """What a scenario's play gets: stacks to act on, and the recording to write into."""

    def __init__(self, name: str, folder: Path) -> None:
        self.name = name
        self.folder = folder
        self.recording = Recording()
        self._acts = 0

    @contextlib.contextmanager
    def stage(self, spec: StageSpec | None = None) -> Iterator[Stage]:
        """A fresh stack for one act of the scenario, stopped when the act ends."""
        self._acts += 1
        folder = self.folder / f"act{self._acts}"
        shutil.rmtree(folder, ignore_errors=True)
        with Stage(spec or StageSpec(), folder, self.recording) as stage:
            log.info("%s: act %d stack up, logs in %s", self.name, self._acts, folder / "logs")
            yield stage


Play = Callable[[Run], Verdict]


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    play: Play


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    timeline: str
    svg: Path


def perform(scenario: Scenario, out_dir: Path, work_dir: Path) -> Outcome:
    """Play the scenario (its stacks' logs under `work_dir`, its timeline and diagram in
    `out_dir`); a step that never happened is a failed verdict, not a crash."""
    run = Run(scenario.name, work_dir / scenario.name)
    try:
        verdict = scenario.play(run)
    except ScenarioFailed as err:
        verdict = Verdict(False, f"did not run to the end: {err}")
    line = verdict.line(scenario.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    svg = out_dir / f"{scenario.name}.svg"
    svg.write_text(render_svg(run.recording, scenario.title, line))
    timeline = render_text(run.recording)
    (out_dir / f"{scenario.name}.txt").write_text(f"{scenario.title}\n{timeline}\n{line}\n")
    return Outcome(verdict, timeline, svg)
