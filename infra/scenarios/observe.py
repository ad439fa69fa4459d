"""What a scenario reads to see a protocol's state for itself: prepared transactions and
the locks they hold, a session waiting on a lock, an order and a product's stock. These
are an operator's reads of each database, never a component's."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from infra.scenarios.stage import Background, Stage, poll
from infra.util import wait_until
from paxkit.db import run

PARTICIPANTS = ("inventory", "coupon", "redpacket")


@dataclass(frozen=True)
class PreparedBranch:
    gid: str
    participant: str
    prepared_at: float


def prepared_branches(stage: Stage, gtid: str) -> list[PreparedBranch]:
    """The transaction's branches now prepared (PREPARE TRANSACTION done, not finished)."""
    rows = stage.db("inventory").fetch_all(
        "SELECT gid, extract(epoch FROM prepared) AS at FROM pg_prepared_xacts "
        "WHERE starts_with(gid, :prefix) ORDER BY prepared",
        prefix=f"{gtid}:",
    )
    # A gid is <gtid>:<participant>, with a suffix of the protocol's own in some modes.
    return [
        PreparedBranch(r["gid"], r["gid"][len(gtid) + 1 :].split(":")[0], float(r["at"]))
        for r in rows
    ]


def locks_held(stage: Stage, gid: str) -> int:
    """Locks a prepared transaction still holds (no backend owns them any more); its row
    locks are in the rows themselves, behind the transaction-id lock counted here."""
    row = stage.db("inventory").fetch_one(
        "SELECT count(*) AS n FROM pg_locks l WHERE l.pid IS NULL AND l.virtualtransaction IN "
        "(SELECT t.virtualtransaction FROM pg_locks t JOIN pg_prepared_xacts p "
        "ON t.transactionid = p.transaction "
        "WHERE t.locktype = 'transactionid' AND t.pid IS NULL AND p.gid = :gid)",
        gid=gid,
    )
    return int(row["n"]) if row else 0


def newest_order(stage: Stage, user_id: int) -> dict[str, Any] | None:
    return stage.db("order").fetch_one(
        "SELECT order_id, gtid, status, reason FROM orders WHERE user_id = :u "
        "ORDER BY created_at DESC LIMIT 1",
        u=user_id,
    )


def stock(stage: Stage, sku: str) -> int:
    row = stage.db("inventory").fetch_one("SELECT available FROM products WHERE sku = :s", s=sku)
    assert row is not None, f"no product {sku}"
    return int(row["available"])


def settled_order(stage: Stage, order_id: str, timeout_s: float) -> dict[str, Any]:
    """The order through the public API once it is no longer pending."""

    def probe() -> dict[str, Any] | None:
        body = dict(stage.get(f"/api/orders/{order_id}").json())
        return body if body.get("status") in ("confirmed", "failed") else None

    return poll(probe, timeout_s, f"order {order_id} to settle", 0.2)


class StockUpdate:
    """An operator's UPDATE of one product's row in its own session, timed: it waits as
    long as a prepared transaction holds the row's lock."""

    def __init__(self, stage: Stage, sku: str, timeout_s: float = 120.0) -> None:
        self.stage = stage
        self.sku = sku
        self.pid: int | None = None
        self.started_at = time.time()
        self.finished_at: float | None = None
        self.work = Background(lambda: self._update(timeout_s))

    def _update(self, timeout_s: float) -> None:
        with self.stage.db("inventory").transaction() as conn:
            self.pid = int(run(conn, "SELECT pg_backend_pid()").scalar_one())
            run(conn, "SELECT set_config('statement_timeout', :t, true)", {"t": f"{timeout_s}s"})
            run(conn, "UPDATE products SET available = available WHERE sku = :s", {"s": self.sku})
        self.finished_at = time.time()

    def waiting_on_lock(self) -> bool:
        if self.pid is None:
            return False
        row = self.stage.db("inventory").fetch_one(
            "SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid", pid=self.pid
        )
        return row is not None and row["wait_event_type"] == "Lock"

    @property
    def done(self) -> bool:
        return self.work.done.is_set()

    def finish(self, timeout_s: float) -> float:
        """Seconds the update took, once it is done."""
        self.work.wait(timeout_s)
        assert self.finished_at is not None
        return self.finished_at - self.started_at


def held_for(seconds: float, still: Callable[[], bool]) -> bool:
    """Watch that `still()` stays true for `seconds` (the outage a scenario holds open)."""
    return not wait_until(lambda: not still(), seconds)
