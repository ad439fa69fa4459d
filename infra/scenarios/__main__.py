"""`python -m infra.scenarios NAME...` (or `--all`): play scenarios, print each one's
timeline and verdict, write its diagram; the exit status is 0 only if every verdict held."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from infra.scenarios.catalog import SCENARIOS, by_name
from infra.scenarios.play import perform
from paxkit.config import load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("names", nargs="*", help="scenarios to play")
    parser.add_argument("--all", action="store_true", help="play every scenario")
    parser.add_argument("--list", action="store_true", help="list the scenarios")
    parser.add_argument("--out", type=Path, help="where diagrams and timelines go")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("pika").setLevel(logging.WARNING)
    if args.list or not (args.names or args.all):
        for scenario in SCENARIOS:
            print(f"{scenario.name:<26} {scenario.title}")
        return 0
    try:
        chosen = list(SCENARIOS) if args.all else [by_name(n) for n in args.names]
    except KeyError as err:
        print(f"unknown scenario {err}; `make scenario` lists them", file=sys.stderr)
        return 2
    work = load_settings().state_dir / "scenarios"
    out = args.out or work
    verdicts = []
    for scenario in chosen:
        outcome = perform(scenario, out, work)
        line = outcome.verdict.line(scenario.name)
        print(f"\n== {scenario.name}: {scenario.title}\n{outcome.timeline}\n{line}")
        print(f"diagram: {outcome.svg}", flush=True)
        verdicts.append(line)
    print("\n" + "\n".join(verdicts))
    return 0 if all(line.startswith("VERDICT PASS") for line in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
