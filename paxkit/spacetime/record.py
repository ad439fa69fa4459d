"""What a scenario (or a transaction's log) saw, as it happened: marks on a process's lane
and messages between lanes, on the wall clock (so the coordinator's own timeline lines up
with them)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# Kinds of mark, each drawn with its own symbol and colour (paxkit/spacetime/diagram.py).
MARK_KINDS = ("info", "prepare", "commit", "abort", "crash", "pause", "resume", "blocked", "bad")


@dataclass(frozen=True)
class Mark:
    at: float
    lane: str
    label: str
    kind: str = "info"


@dataclass(frozen=True)
class Message:
    sent_at: float
    received_at: float
    source: str
    target: str
    label: str
    ok: bool = True


@dataclass
class Recording:
    """Every mark and message of one scenario, and the lanes in the order they appeared."""

    started_at: float = field(default_factory=time.time)
    lanes: list[str] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def lane(self, name: str) -> None:
        """Give `name` its lane now (lanes are drawn in the order they were named)."""
        with self._lock:
            if name not in self.lanes:
                self.lanes.append(name)

    def mark(self, lane: str, label: str, kind: str = "info", at: float | None = None) -> Mark:
        if kind not in MARK_KINDS:
            raise ValueError(f"unknown mark kind {kind!r}")
        mark = Mark(time.time() if at is None else at, lane, label, kind)
        self.lane(lane)
        with self._lock:
            self.marks.append(mark)
        return mark

    def message(
        self,
        source: str,
        target: str,
        label: str,
        sent_at: float,
        received_at: float | None = None,
        ok: bool = True,
    ) -> Message:
        message = Message(
            sent_at, time.time() if received_at is None else received_at, source, target, label, ok
        )
        self.lane(source)
        self.lane(target)
        with self._lock:
            self.messages.append(message)
        return message

    def coordinator_timeline(
        self,
        detail: dict[str, Any],
        coordinator: str = "coordinator",
        after: float | None = None,
        later: str | None = None,
        call_drawn_s: float | None = None,
    ) -> None:
        """Draw the coordinator's own record of a transaction (GET /admin/transactions/<gtid>):
        one arrow per branch call, ending when its answer was logged (a step of the mode
        itself, such as Paxos learning its value, is a mark); the calls logged after `after`
        come from the lane `later` (another coordinator instance). A call made again (a
        retry, recovery's included) is labelled with its attempt: `commit #2 ok`. An arrow
        starts `call_drawn_s` (default CALL_DRAWN_S) before the answer was logged."""
        drawn_s = CALL_DRAWN_S if call_drawn_s is None else call_drawn_s
        attempts: Counter[tuple[str, str]] = Counter()
        for event in detail.get("timeline", []):
            at = datetime.fromisoformat(event["at"]).timestamp()
            ok = event["outcome"] == "ok"
            call = (event["branch"], event["op"])
            attempts[call] += 1
            label = f"{event['op']}{_attempt(attempts[call])} {'ok' if ok else event['outcome']}"
            source = later if later is not None and after is not None and at > after else None
            if event["branch"] == detail.get("mode"):  # the coordinator's own step
                self.mark(source or coordinator, label, "commit" if ok else "abort", at)
                continue
            self.message(source or coordinator, event["branch"], label, at - drawn_s, at, ok)

    def events(self) -> list[tuple[float, str]]:
        """Every mark and message as one line of text each, in time order."""
        lines = [(m.at, f"{m.lane:<14} {m.label}") for m in self.marks]
        lines += [
            (
                m.received_at,
                f"{m.source:<14} -> {m.target:<12} {m.label}{'' if m.ok else '  (failed)'}",
            )
            for m in self.messages
        ]
        return sorted(lines)


# How long before its logged answer a branch call's arrow starts (the log keeps one time).
CALL_DRAWN_S = 0.02


def _attempt(number: int) -> str:
    return f" #{number}" if number > 1 else ""
