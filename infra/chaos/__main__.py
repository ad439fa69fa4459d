"""`python -m infra.chaos --profile short|long [--seed N] [--minutes M]`."""

from __future__ import annotations

import argparse
import logging
import secrets
import sys
from pathlib import Path

from infra.chaos.runner import Run, RunConfig
from infra.chaos.schedule import plan
from infra.util import setup_logging
from paxkit.config import REPO_ROOT

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run paxmart under load and real faults.")
    parser.add_argument("--profile", choices=("short", "long"), default="short")
    parser.add_argument("--seed", type=int, default=None, help="replays a schedule")
    parser.add_argument("--minutes", type=float, default=None, help="long: time to fill")
    parser.add_argument("--rate", type=float, default=4.0, help="order requests per second")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "chaos-results")
    args = parser.parse_args(argv)
    setup_logging()
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    chosen = plan(args.profile, seed, args.minutes)
    print(f"chaos profile={args.profile} seed={seed} rounds={len(chosen.rounds)}", flush=True)
    for number, chaos_round in enumerate(chosen.rounds, 1):
        faults = ", ".join(f"{f.label}@{f.at_s:.0f}s" for f in chosen.rounds[number - 1].faults)
        print(f"  {number:>2} {chaos_round.scenario} ({chaos_round.load_s:.0f}s): {faults}")
    out = args.out / f"{args.profile}-{seed}"
    return Run(RunConfig(chosen, out, rate_per_s=args.rate)).execute()


if __name__ == "__main__":
    sys.exit(main())
