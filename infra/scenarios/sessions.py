"""Session guarantees through the gateway's product cache: `read-your-writes` and
`monotonic-reads` (Terry et al., "Session Guarantees for Weakly Consistent Replicated
Data", 1994), each played with the client's read-around window off and on.

The cache (gateway/cache.py) is eventually consistent: a copy can be up to one TTL older
than the database. A client who orders reads around it for `own_reads_s` after its answer
(PAXMART_CACHE_OWN_READS_S). The scenario makes the cache hold an old copy on purpose: a
msg order is accepted (202) while the inventory worker is paused, another client reads the
product meanwhile (caching the stock from before the order), then settlement resumes.

- read-your-writes: once its order is confirmed, does the client see it? With the window
  on, every read inside the window does; with it off, the first read is the cached copy
  from before its own order.
- monotonic reads: does a client ever see the stock go back in time? With the window off
  it reads the cache only, which moves forward; with it on, it reads the database during
  the window and the older cached copy after it, until that copy expires. The two
  guarantees are separate: the mechanism that gives the first takes away the second at
  the window's end, exactly as far as one TTL.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass

from infra.scenarios.play import Run, Scenario, Verdict
from infra.scenarios.stage import Stage, StageSpec, poll

SKU = "SKU-0020"
USER = 9
WINDOW_ON_S = 5.0
READ_SPAN_S = 13.0
READ_EVERY_S = 0.5
# The client who orders is user USER, signed in: its reads carry its token, so the gateway
# knows them for its own. The other reader is anonymous (told apart by its address).
OTHER: dict[str, str] = {}


def client(stage: Stage) -> dict[str, str]:
    return stage.signed_in.book.headers(USER)


@dataclass(frozen=True)
class Read:
    at: float
    stock: int
    cache: str


@dataclass(frozen=True)
class Observed:
    """One act: the stock before the order, when it was answered and confirmed, and the
    client's reads after the confirmation."""

    before: int
    answered_at: float
    confirmed_at: float
    reads: tuple[Read, ...]


def stale_reads(reads: Sequence[Read], written: int, until: float) -> list[Read]:
    """Reads before `until` that do not show the client's write (stock `written`)."""
    return [r for r in reads if r.at < until and r.stock != written]


def regressions(reads: Sequence[Read]) -> list[tuple[Read, Read]]:
    """Pairs (earlier, later) where the later read shows an older state: the stock only
    goes down in this scenario, so a later read showing more went back in time."""
    found, lowest = [], None
    for read in reads:
        if lowest is not None and read.stock > lowest.stock:
            found.append((lowest, read))
        if lowest is None or read.stock < lowest.stock:
            lowest = read
    return found


def read_product(stage: Stage, lane: str, headers: dict[str, str]) -> Read:
    sent = time.time()
    reply = stage.get(f"/api/products/{SKU}", headers=headers)
    read = Read(time.time(), int(reply.json()["stock"]), reply.headers.get("X-Cache", "-"))
    stage.recording.message(lane, "gateway", f"GET → {read.stock} ({read.cache})", sent, read.at)
    return read


def signal_workers(stage: Stage, name: str, sig: signal.Signals) -> None:
    for pid in stage.running.process_group(name):
        os.kill(pid, sig)


def place_while_settlement_paused(stage: Stage) -> Observed:
    """The act both scenarios share; the client's reads for READ_SPAN_S after confirmation."""
    recording = stage.recording
    before = read_product(stage, "client-b", OTHER).stock
    signal_workers(stage, "inventory-worker", signal.SIGSTOP)
    recording.mark("inventory", "worker SIGSTOPped (settlement paused)", "pause")
    sent = time.time()
    placed = stage.post(
        "/api/orders",
        json={"user_id": USER, "items": [{"sku": SKU, "qty": 1}], "mode": "msg"},
        headers=client(stage),
    )
    answered_at = time.time()
    assert placed.status_code == 202, placed.text
    order_id = placed.json()["order_id"]
    recording.message("client-a", "gateway", "POST order → 202", sent, answered_at)
    read_product(stage, "client-b", OTHER)  # caches the stock from before the order
    signal_workers(stage, "inventory-worker", signal.SIGCONT)
    recording.mark("inventory", "worker resumed: settles the order", "resume")

    def confirmed() -> bool:
        return stage.get(f"/api/orders/{order_id}").json().get("status") == "confirmed"

    poll(confirmed, 30, "the order to be confirmed", 0.1)
    confirmed_at = time.time()
    recording.mark("client-a", "sees its order confirmed", "commit")
    reads = []
    while time.time() < confirmed_at + READ_SPAN_S:
        reads.append(read_product(stage, "client-a", client(stage)))
        time.sleep(READ_EVERY_S)  # the client's reading pace, not a wait for a condition
    return Observed(before, answered_at, confirmed_at, tuple(reads))


def act(run: Run, window_s: float) -> Observed:
    spec = StageSpec(env={"PAXMART_CACHE_OWN_READS_S": str(window_s)})
    with run.stage(spec) as stage:
        label = f"window {'off' if window_s == 0 else f'{window_s:g}s'}"
        stage.recording.mark("gateway", f"stack up, read-around {label}", "info")
        return place_while_settlement_paused(stage)


def lanes(run: Run) -> None:
    for lane in ("client-a", "client-b", "gateway", "inventory"):
        run.recording.lane(lane)


def read_your_writes(run: Run) -> Verdict:
    lanes(run)
    off, on = act(run, 0.0), act(run, WINDOW_ON_S)
    written = off.before - 1
    stale_off = stale_reads(off.reads, written, off.answered_at + WINDOW_ON_S)
    stale_on = stale_reads(on.reads, on.before - 1, on.answered_at + WINDOW_ON_S)
    passed = bool(stale_off) and not stale_on and bool(on.reads)
    return Verdict(
        passed,
        f"window {WINDOW_ON_S:g}s: every read within it shows the client's own order "
        f"({len(stale_on)} stale); window off: {len(stale_off)} reads after its confirmed "
        f"order showed the stock from before it ({off.before} instead of {written})",
    )


def monotonic_reads(run: Run) -> Verdict:
    lanes(run)
    off, on = act(run, 0.0), act(run, WINDOW_ON_S)
    back_off, back_on = regressions(off.reads), regressions(on.reads)
    window_end = on.answered_at + WINDOW_ON_S
    after_window = all(later.at >= window_end for _, later in back_on)
    passed = not back_off and bool(back_on) and after_window
    first = back_on[0] if back_on else None
    step = (
        f"{first[0].stock} then {first[1].stock} ({first[1].cache}) "
        f"{first[1].at - window_end:+.1f}s after the window ended"
        if first
        else "none"
    )
    return Verdict(
        passed,
        f"window off: the cache alone moves forward ({len(back_off)} steps back); window "
        f"{WINDOW_ON_S:g}s: reads go back in time when it ends: {step}",
    )


SCENARIOS = (
    Scenario(
        "read-your-writes",
        "Read-your-writes through the product cache, read-around window off and on",
        read_your_writes,
    ),
    Scenario(
        "monotonic-reads",
        "Monotonic reads through the product cache, read-around window off and on",
        monotonic_reads,
    ),
)
