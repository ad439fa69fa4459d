"""A worker process's heartbeat: a file it touches while its background work runs.

A worker serves no HTTP, so a container probe asks this instead:
`python -m paxkit.heartbeat <component>` exits 0 while the component's worker beat within
PROBE_MAX_AGE_S, else 1 and says why. It imports only the settings (a probe runs often).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from paxkit.config import load_settings

INTERVAL_S = 5.0
# A beat older than this: the worker is not (or no longer) running its work.
PROBE_MAX_AGE_S = 30.0


def heartbeat_file(state_dir: Path, component: str) -> Path:
    """Where the worker of `component` beats (one worker per container or state folder)."""
    return state_dir / "heartbeats" / f"{component}-worker"


def beat(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def age_s(path: Path) -> float | None:
    """Seconds since the last beat; None when the worker never beat (or stopped)."""
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None


def probe(component: str, max_age_s: float = PROBE_MAX_AGE_S) -> int:
    """0 while the component's worker beat within `max_age_s`, else 1 (and says why)."""
    age = age_s(heartbeat_file(load_settings().state_dir, component))
    if age is not None and age <= max_age_s:
        return 0
    why = "no heartbeat" if age is None else f"last beat {age:.0f}s ago"
    print(f"worker of {component}: {why}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m paxkit.heartbeat <component>", file=sys.stderr)
        return 2
    return probe(args[0])


if __name__ == "__main__":
    sys.exit(main())
