"""`python -m paxkit.commit_model`: every run of 2PC, 3PC and Paxos Commit, checked.

For one coordinator and participants p1..p3 (and, for Paxos Commit, acceptors a1..a3 and
a backup coordinator) the explorer in paxkit.commitcheck walks every interleaving of
messages, timeouts, crashes and partitions within a fault budget, and prints per protocol
whether a participant can commit while another aborts, and whether a live participant that
voted yes can be left unable to ever decide, each with a shortest trace.
"""

from __future__ import annotations

import argparse
import sys
import time

from paxkit.commitcheck.classic import ThreePhaseCommit, TwoPhaseCommit
from paxkit.commitcheck.explorer import CommitProtocol, Report, explore
from paxkit.commitcheck.paxos_commit import PaxosCommit

PROTOCOLS = {"2pc": TwoPhaseCommit, "3pc": ThreePhaseCommit, "paxos": PaxosCommit}


def report_lines(report: Report, max_faults: int, seconds: float) -> list[str]:
    consistency = "consistent" if report.consistent else "INCONSISTENT"
    blocking = "can block" if report.can_block else "never blocks"
    searched = "" if report.complete else " (search cut short: the verdicts are partial)"
    lines = [
        f"{report.protocol}: {consistency}, {blocking} "
        f"({report.worlds} worlds, up to {max_faults} faults, {seconds:.1f} s){searched}"
    ]
    for title, trace in (
        ("a participant commits, another aborts", report.inconsistency),
        ("blocked", report.blocking),
    ):
        if trace is not None:
            lines += [f"  {title}:", *("  " + line for line in trace.lines())]
    return lines


def check(protocol: CommitProtocol, max_faults: int | None) -> list[str]:
    faults = protocol.default_max_faults if max_faults is None else max_faults
    started = time.monotonic()
    report = explore(protocol, faults)
    return report_lines(report, faults, time.monotonic() - started)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m paxkit.commit_model", description=__doc__)
    parser.add_argument(
        "protocols", nargs="*", metavar="PROTOCOL", help="2pc, 3pc or paxos (default: all three)"
    )
    parser.add_argument(
        "--max-faults",
        type=int,
        default=None,
        help="crashes and partitions per run (default: 2, Paxos Commit 1)",
    )
    args = parser.parse_args(argv)
    unknown = [name for name in args.protocols if name not in PROTOCOLS]
    if unknown:
        parser.error(f"unknown protocol {', '.join(unknown)} (choose from {', '.join(PROTOCOLS)})")
    args.protocols = args.protocols or list(PROTOCOLS)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for name in args.protocols:
        print("\n".join(check(PROTOCOLS[name](), args.max_faults)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
