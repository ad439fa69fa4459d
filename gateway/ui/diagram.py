"""A transaction drawn as a space-time diagram (paxkit.spacetime): the coordinator's lane
and one per branch, an arrow per logged call (each retry its own, numbered), a mark where
it began and one for its outcome."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gateway.ui.records import TxnRow
from paxkit.spacetime.diagram import render_svg
from paxkit.spacetime.record import Recording

COORDINATOR = "coordinator"
OUTCOME_KINDS = {"committed": "commit", "aborted": "abort"}
CALL_SHARE = 25


def transaction_svg(txn: TxnRow, detail: dict[str, Any]) -> str:
    """`detail` is the coordinator's answer to GET /admin/transactions/<gtid>."""
    began, last = _seconds(txn.created_at), _seconds(txn.updated_at)
    recording = Recording(started_at=began)
    recording.lane(COORDINATOR)
    for branch in txn.branches:
        recording.lane(branch)
    recording.mark(COORDINATOR, f"begin ({txn.mode})", "info", at=began)
    # The log keeps when each answer came; a call is drawn as a short share of the whole.
    drawn_s = max(0.001, (last - began) / CALL_SHARE)
    recording.coordinator_timeline(detail, coordinator=COORDINATOR, call_drawn_s=drawn_s)
    recording.mark(COORDINATOR, txn.status, OUTCOME_KINDS.get(txn.status, "blocked"), at=last)
    return render_svg(recording, f"{txn.mode} transaction {txn.gtid}", verdict(txn))


def verdict(txn: TxnRow) -> str:
    words = [txn.status if txn.status in OUTCOME_KINDS else f"{txn.status} (not finished)"]
    if txn.reason:
        words.append(f"reason: {txn.reason}")
    if txn.recovery_attempts:
        words.append(f"taken over by recovery {txn.recovery_attempts} time(s)")
    return " · ".join(words)


def _seconds(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()
