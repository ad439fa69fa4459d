"""`peak-shaving` (异步削峰): a burst of orders while the gateway's `order_async` switch is
on. The order service records each order and its event in one local commit and answers
202; worker processes settle the queue behind it at the databases' pace. The burst is
accepted faster than it can be settled, the backlog rises and drains, every order ends
confirmed and the audit is clean: the peak was absorbed, not dropped and not half-done.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from infra.scenarios.play import Run, Scenario, Verdict
from infra.scenarios.stage import Stage, poll

BURST = 240
CLIENTS = 24
FIRST_USER = 200
DRAIN_S = 180.0


@dataclass(frozen=True)
class Sample:
    at: float
    pending: int
    settled: int


def order_counts(stage: Stage) -> Sample:
    row = stage.db("order").fetch_one(
        "SELECT count(*) FILTER (WHERE status = 'pending') AS pending, "
        "count(*) FILTER (WHERE status <> 'pending') AS settled FROM orders"
    )
    assert row is not None
    return Sample(time.time(), int(row["pending"]), int(row["settled"]))


class Backlog:
    """Samples the order service's pending and settled counts until stopped."""

    def __init__(self, stage: Stage) -> None:
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, args=(stage,), daemon=True)
        self._thread.start()

    def _watch(self, stage: Stage) -> None:
        while not self._stop.wait(0.25):
            self.samples.append(order_counts(stage))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def switch_on(stage: Stage, name: str) -> None:
    reply = stage.admin("PUT", f"/admin/switches/{name}", json={"on": True})
    assert reply.status_code == 200, reply.text

    def effective() -> bool:
        body = stage.admin("GET", "/admin/switches").json()
        return bool(body["switches"][name]["on"])

    poll(effective, 10, f"switch {name} to be on")
    stage.recording.mark("gateway", f"{name} on", "info")


def place(stage: Stage, n: int) -> int:
    body = {
        "user_id": FIRST_USER + n,
        "items": [{"sku": f"SKU-{n % 50 + 1:04d}", "qty": 1}],
        "mode": "2pc",
    }
    return stage.post("/api/orders", json=body).status_code


def draw(stage: Stage, started: float, samples: list[Sample]) -> None:
    """One mark per second: the backlog, and the orders settled in that second."""
    recording, last_settled, next_at = stage.recording, 0, started
    for sample in samples:
        if sample.at < next_at:
            continue
        recording.mark("queue", f"backlog {sample.pending}", "blocked", sample.at)
        if sample.settled > last_settled:
            recording.mark("workers", f"+{sample.settled - last_settled}", "commit", sample.at)
        last_settled, next_at = sample.settled, sample.at + 1.0


def peak_shaving(run: Run) -> Verdict:
    for lane in ("clients", "gateway", "queue", "workers"):
        run.recording.lane(lane)
    with run.stage() as stage:
        switch_on(stage, "order_async")
        backlog = Backlog(stage)
        started = time.time()
        with ThreadPoolExecutor(CLIENTS) as pool:
            statuses = list(pool.map(lambda n: place(stage, n), range(BURST)))
        accepted_at = time.time()
        stage.recording.message(
            "clients", "gateway", f"{BURST} orders, {CLIENTS} at a time", started, accepted_at
        )
        poll(lambda: order_counts(stage).pending == 0, DRAIN_S, "the backlog to drain", 0.25)
        drained_at = time.time()
        backlog.stop()
        draw(stage, started, backlog.samples)
        final = stage.db("order").fetch_all(
            "SELECT status, count(*) AS n FROM orders GROUP BY status"
        )
        audit = stage.admin("GET", "/admin/audit").json()
    peak = max((s.pending for s in backlog.samples), default=0)
    outcome = {row["status"]: int(row["n"]) for row in final}
    accept_rate = BURST / (accepted_at - started)
    settle_rate = BURST / (drained_at - started)
    passed = (
        statuses.count(202) == BURST
        and outcome.get("confirmed") == BURST
        and audit.get("ok") is True
        and accept_rate > settle_rate
        and peak > 0
    )
    return Verdict(
        passed,
        f"{statuses.count(202)}/{BURST} accepted (202) at {accept_rate:.0f}/s; backlog "
        f"peaked at {peak} and drained in {drained_at - accepted_at:.1f}s; settled at "
        f"{settle_rate:.0f}/s overall; {outcome.get('confirmed', 0)} confirmed; audit "
        f"{'clean' if audit.get('ok') else audit.get('violations')}",
    )


SCENARIOS = (
    Scenario("peak-shaving", "异步削峰: a burst absorbed by the queue and drained", peak_shaving),
)
