"""The report of a chaos run: one table, a timeline PNG, JSON; and the exit status.

Per scenario (round): orders attempted (Idempotency-Keys sent), confirmed and failed
(as the order database has them), client 5xx by code (and requests with no answer),
server-side 500s (from the components' access logs), invariant violations, seconds from
the end of its last fault to quiescence, and what was stuck. Exit status 0 only when no
violation, nothing stuck and no 500 anywhere.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from infra.chaos.checker import AuditAnswer, Snapshot, Verdict, Violation
from infra.chaos.history import History, Op, RoundResult
from infra.chaos.schedule import Plan

log = logging.getLogger(__name__)

ACCESS = re.compile(r"^[A-Z]+ \S+ (\d{3}) ")
FINAL = "final"


@dataclass
class Row:
    scenario: str
    attempted: int = 0
    confirmed: int = 0
    failed: int = 0
    client_5xx: dict[str, int] = field(default_factory=dict)
    server_500s: int = 0
    violations: int = 0
    quiescence_s: float | None = None
    stuck: dict[str, int] = field(default_factory=dict)


@dataclass
class Result:
    profile: str
    seed: int
    minutes: float
    wall_s: float
    rows: list[Row]
    violations: list[Violation]
    info: dict[str, int]
    audit: AuditAnswer
    server_500s: dict[str, int]

    @property
    def ok(self) -> bool:
        return (
            not self.violations
            and not any(r.stuck for r in self.rows)
            and not any(
                r.server_500s or any(label.startswith("500") for label in r.client_5xx)
                for r in self.rows
            )
        )


def server_500s(log_dir: Path) -> list[tuple[str, float]]:
    """(component, time) of every 500 a component answered, from its JSON access lines."""
    found = []
    for path in sorted(log_dir.glob("*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            match = ACCESS.match(str(entry.get("msg", "")))
            if match and match.group(1) == "500":
                stamp = datetime.fromisoformat(str(entry["ts"]).replace("Z", "+00:00"))
                found.append((path.stem, stamp.timestamp()))
    return found


def _round_of(moment: float, rounds: list[RoundResult]) -> str:
    for r in rounds:
        if r.start <= moment <= r.end:
            return r.scenario
    return FINAL


def build(
    plan: Plan,
    history: History,
    verdict: Verdict,
    extra: list[Violation],
    answer: AuditAnswer,
    final: RoundResult,
    log_dir: Path,
    wall_s: float,
    snap: Snapshot,
) -> Result:
    rows = {
        r.scenario: Row(r.scenario, quiescence_s=r.quiescence_s, stuck=r.stuck)
        for r in history.rounds
    }
    rows[FINAL] = Row(FINAL, quiescence_s=final.quiescence_s, stuck=final.stuck)
    ops = history.ops
    _count_orders(rows, ops, verdict, snap)
    for op in ops:
        if op.info:
            row = rows.setdefault(op.scenario, Row(op.scenario))
            row.client_5xx[op.label] = row.client_5xx.get(op.label, 0) + 1
    fives = server_500s(log_dir)
    for _, moment in fives:
        rows.setdefault(_round_of(moment, history.rounds), Row(FINAL)).server_500s += 1
    violations = [*verdict.violations, *extra]
    scenario_of = _scenario_of_orders(ops, snap)
    for v in violations:
        scenario = scenario_of.get(v.order_id or "", FINAL)
        rows.setdefault(scenario, Row(scenario)).violations += 1
    return Result(
        plan.profile,
        plan.seed,
        plan.minutes,
        wall_s,
        list(rows.values()),
        violations,
        verdict.info,
        answer,
        dict(Counter(c for c, _ in fives)),
    )


def _scenario_of_orders(ops: list[Op], snap: Snapshot) -> dict[str, str]:
    first: dict[str, str] = {}
    for op in ops:
        if op.is_order:
            first.setdefault(op.key, op.scenario)
    return {k["order_id"]: first[k["key"]] for k in snap.keys if k["key"] in first}


def _count_orders(rows: dict[str, Row], ops: list[Op], verdict: Verdict, snap: Snapshot) -> None:
    placed = {k["key"]: k["order_id"] for k in snap.keys}
    keys: dict[str, str] = {}
    for op in ops:
        if op.is_order:
            keys.setdefault(op.key, op.scenario)
    for key, scenario in keys.items():
        row = rows.setdefault(scenario, Row(scenario))
        row.attempted += 1
        status = verdict.orders.get(placed.get(key, ""), {}).get("status")
        row.confirmed += status == "confirmed"
        row.failed += status == "failed"


def _fmt_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "0"


def table(result: Result) -> str:
    """The report's table, in Markdown."""
    head = (
        "scenario",
        "attempted",
        "confirmed",
        "failed",
        "client 5xx (by code)",
        "server 500s",
        "violations",
        "s to quiescence",
        "stuck",
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result.rows:
        q = "-" if r.quiescence_s is None else f"{r.quiescence_s:.1f}"
        cells = (
            r.scenario,
            r.attempted,
            r.confirmed,
            r.failed,
            _fmt_counts(r.client_5xx),
            r.server_500s,
            r.violations,
            q,
            _fmt_counts(r.stuck) if r.stuck else "none",
        )
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def summary(result: Result) -> str:
    info = _fmt_counts(result.info) if result.info else "none"
    verdict = "PASS" if result.ok else "FAIL"
    lines = [
        f"chaos {result.profile} seed={result.seed} wall={result.wall_s:.0f}s: {verdict}",
        f"info outcomes (5xx or no answer) resolved as: {info}",
        f"audit: {result.audit.status} ok={result.audit.ok}",
    ]
    lines += [f"violation: {v.check} {v.order_id or ''} {v.detail}" for v in result.violations[:50]]
    return "\n".join(lines)


def timeline(history: History, path: Path) -> None:
    """Orders/s by client outcome, fault windows shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ops = [op for op in history.ops if op.is_order]
    if not ops:
        return
    t0 = min(op.started for op in ops)
    per_second: dict[str, Counter[int]] = defaultdict(Counter)
    for op in ops:
        per_second[_outcome(op)][int(op.started - t0)] += 1
    end = int(max(op.started for op in ops) - t0) + 1
    fig, ax = plt.subplots(figsize=(14, 5))
    for outcome, counts in sorted(per_second.items()):
        ax.plot(range(end), [counts[s] for s in range(end)], label=outcome, linewidth=0.8)
    for w in history.windows:
        if w.end - w.start > 0.5:
            ax.axvspan(w.start - t0, w.end - t0, color="red", alpha=0.15)
        else:
            ax.axvline(w.start - t0, color="red", alpha=0.4, linewidth=0.6)
    ax.set_xlabel("seconds since the load started")
    ax.set_ylabel("order requests/s")
    ax.set_title("paxmart chaos: order requests by outcome (faults in red)")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _outcome(op: Op) -> str:
    if op.status is None:
        return "no answer"
    if op.status >= 500:
        return "5xx"
    if op.status in (201, 202, 409):
        return {201: "confirmed", 202: "accepted (msg)", 409: "failed"}[op.status]
    return f"{op.status // 100}xx"


def write(result: Result, out_dir: Path, history: History) -> int:
    """Table to stdout and table.md, report.json, history.json, timeline.png; exit status."""
    out_dir.mkdir(parents=True, exist_ok=True)
    text = table(result)
    (out_dir / "table.md").write_text(text + "\n")
    body = {**asdict(result), "ok": result.ok}
    (out_dir / "report.json").write_text(json.dumps(body, indent=2, default=str))
    (out_dir / "history.json").write_text(json.dumps(history.to_json(), default=str))
    timeline(history, out_dir / "timeline.png")
    print(text)
    print(summary(result))
    print(f"report: {out_dir}/table.md, report.json, timeline.png, history.json", flush=True)
    return 0 if result.ok else 1
