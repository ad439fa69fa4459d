"""What a chaos run saw: every client request with its outcome, and every fault window."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

ORDER_KINDS = ("order", "duplicate", "concurrent")


@dataclass(frozen=True)
class Op:
    """One client request and what came back (status None: no answer at all)."""

    key: str  # the Idempotency-Key ("" for reads and admin calls)
    kind: str  # order | duplicate | concurrent | read | admin
    mode: str
    scenario: str
    started: float  # wall clock (time.time())
    ended: float
    status: int | None
    code: str | None  # the error code of the answer, or why there was none
    order_id: str | None = None
    order_status: str | None = None

    @property
    def is_order(self) -> bool:
        return self.kind in ORDER_KINDS

    @property
    def info(self) -> bool:
        """A Jepsen "info" outcome: a 5xx or no answer, so the effect is unknown."""
        return self.status is None or self.status >= 500

    @property
    def label(self) -> str:
        """How the report groups client failures: `503 database_unavailable`, `none timeout`."""
        return f"{self.status if self.status is not None else 'none'} {self.code or ''}".strip()


@dataclass(frozen=True)
class Window:
    """A fault, from its injection to its end (equal for an instant fault such as a kill)."""

    scenario: str
    fault: str
    start: float
    end: float


@dataclass
class RoundResult:
    """One scenario round: when it ran, how long quiescence took after its last fault, and
    what was still unsettled at the deadline."""

    scenario: str
    start: float
    end: float
    quiescence_s: float | None
    stuck: dict[str, int] = field(default_factory=dict)


class History:
    """Thread-safe log of requests and fault windows; `scenario` labels what comes in."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ops: list[Op] = []
        self.windows: list[Window] = []
        self.rounds: list[RoundResult] = []
        self.scenario = "warmup"

    def record(self, op: Op) -> None:
        with self._lock:
            self._ops.append(op)

    def window(self, fault: str, start: float, end: float | None = None) -> None:
        with self._lock:
            self.windows.append(Window(self.scenario, fault, start, end or time.time()))

    @property
    def ops(self) -> list[Op]:
        with self._lock:
            return list(self._ops)

    def to_json(self) -> dict[str, Any]:
        return {
            "ops": [asdict(op) for op in self.ops],
            "windows": [asdict(w) for w in self.windows],
            "rounds": [asdict(r) for r in self.rounds],
        }
