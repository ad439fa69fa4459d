"""Every scenario, by name, in the order `make scenarios` plays them."""

from __future__ import annotations

from infra.scenarios import commit, fencing, sessions, shaving
from infra.scenarios.play import Scenario

SCENARIOS: tuple[Scenario, ...] = (
    *commit.SCENARIOS,
    *fencing.SCENARIOS,
    *sessions.SCENARIOS,
    *shaving.SCENARIOS,
)


def by_name(name: str) -> Scenario:
    for scenario in SCENARIOS:
        if scenario.name == name:
            return scenario
    raise KeyError(name)
