"""Each service answers for its own invariants: the participant side of the audit.

No component reads another's database; the coordinator's audit asks every service over
HTTP and combines the answers (coordinator/audit.py). A participant declares its `Ledger`:

- its local invariants, as queries that return the rows violating them (e.g. stock
  conservation per SKU), and what it counts as checked;
- its effects per order (`order_id, state, item, amount`: one row per unit of effect, in
  the participant's hold states), and how a branch payload claims effects (`claims`), so
  each order can be compared with what its transaction asked of this participant.

The coordinator pages through the initiator's orders (ordered by id) and sends each page
to every participant with the part that participant should hold; a participant compares
its effects for that id range only, so memory stays bounded by the page size.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, jsonify, request

from paxkit.db import Database
from paxkit.errors import InvalidInput
from paxkit.requests_json import json_body

Violation = dict[str, Any]
Claims = Callable[[dict[str, Any]], dict[str, int]]  # branch payload -> {item: amount}
MAX_PAGE = 1000
MAX_HORIZON_S = 7 * 24 * 3600.0


@dataclass(frozen=True)
class Invariant:
    """A local invariant: `sql` returns the rows that break it (none when it holds)."""

    check: str
    sql: str


@dataclass(frozen=True)
class Ledger:
    """How a participant's data answers the audit."""

    checked: str  # what the audit counts (e.g. "skus")
    count_sql: str  # SELECT count(*) AS n FROM ...
    invariants: tuple[Invariant, ...]
    effects_sql: str  # SELECT order_id, state, item, amount FROM ... (every effect row)
    claims: Claims


@dataclass(frozen=True)
class Page:
    """One page of the initiator's orders, each with the part this participant should hold."""

    after: str
    upto: str | None  # None: the last page, so every effect past `after` belongs to it
    orders: list[dict[str, Any]]


@dataclass(frozen=True)
class HoldStates:
    """The states of a participant's effects: kept on hold, made final, given back."""

    held: str
    final: str


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (v if isinstance(v, int | float | str | bool) or v is None else str(v))
        for k, v in row.items()
    }


class LedgerAudit:
    """A participant's answers: its invariants, its effects per order, its leftovers."""

    def __init__(self, name: str, db: Database, ledger: Ledger, states: HoldStates) -> None:
        self.name = name
        self.db = db
        self.ledger = ledger
        self.states = states

    def invariants(self) -> dict[str, Any]:
        violations = [
            {"check": inv.check, "service": self.name, **_plain(row)}
            for inv in self.ledger.invariants
            for row in self.db.fetch_all(inv.sql)
        ]
        count = self.db.fetch_one(self.ledger.count_sql)
        return {
            "violations": violations,
            "checked": {self.ledger.checked: int(count["n"]) if count else 0},
        }

    def orders(self, page: Page) -> list[Violation]:
        """Atomicity of each order of the page, as far as this participant's part goes."""
        effects: dict[str, list[dict[str, Any]]] = defaultdict(list)
        bound = "" if page.upto is None else " AND e.order_id <= :upto"
        in_page = f"SELECT * FROM ({self.ledger.effects_sql}) AS e WHERE e.order_id > :after{bound}"
        for row in self.db.fetch_all(in_page, after=page.after, upto=page.upto):
            effects[row["order_id"]].append(row)
        violations: list[Violation] = []
        for order in page.orders:
            violations += self._order(order, effects.pop(order["order_id"], []))
        violations += [
            {"check": "effect_without_order", "effect": self.name, "order_id": order_id}
            for order_id in sorted(effects)
        ]
        return violations

    def _claims(self, part: dict[str, Any]) -> dict[str, int]:
        """What an order's part says this participant holds; one it cannot read is a 400."""
        try:
            return self.ledger.claims(part)
        except (KeyError, TypeError, ValueError) as err:
            raise InvalidInput("orders", f"a part this participant cannot read: {err!r}") from err

    def _order(self, order: dict[str, Any], effects: list[dict[str, Any]]) -> list[Violation]:
        order_id, status = order["order_id"], order["status"]
        if status == "pending":
            return []  # the initiator reports a pending order that is stuck
        found = {"order_id": order_id, "status": status, "effect": self.name}
        if any(e["state"] == self.states.held for e in effects):
            return [{"check": "order_holds_left", **found}]
        applied: dict[str, int] = defaultdict(int)
        for e in effects:
            if e["state"] == self.states.final:
                applied[str(e["item"])] += int(e["amount"])
        if status == "failed":
            return [{"check": "failed_order_with_effects", **found}] if applied else []
        part = order.get("part")
        expected = self._claims(part) if isinstance(part, dict) else {}
        if dict(applied) != expected:
            return [{"check": "confirmed_order_incomplete", **found, "applied": dict(applied)}]
        return []


def leftovers(db: Database, horizon_s: float) -> dict[str, Any]:
    """What this database still holds past the horizon: prepared transactions, unsent events."""
    prepared = db.fetch_all(
        "SELECT gid, extract(epoch FROM now() - prepared) AS age_s FROM pg_prepared_xacts "
        "WHERE database = current_database()"
    )
    unsent = db.fetch_one(
        "SELECT count(*) AS n, count(*) FILTER (WHERE created_at < now() - "
        "make_interval(secs => :h)) AS old FROM outbox WHERE sent_at IS NULL",
        h=horizon_s,
    )
    return {
        "prepared": [
            {"gid": r["gid"], "age_s": float(r["age_s"])}
            for r in prepared
            if float(r["age_s"]) > horizon_s
        ],
        "prepared_total": len(prepared),
        "unsent_events": int(unsent["n"]) if unsent else 0,
        "unsent_past_horizon": int(unsent["old"]) if unsent else 0,
    }


def horizon_arg() -> float:
    raw = request.args.get("horizon_s", "0")
    try:
        horizon = float(raw)
    except ValueError:
        horizon = -1.0
    if not 0 <= horizon <= MAX_HORIZON_S:
        raise InvalidInput("horizon_s", f"horizon_s must be a number from 0 to {MAX_HORIZON_S:.0f}")
    return horizon


def page_of(body: dict[str, Any]) -> Page:
    after, upto, orders = body.get("after"), body.get("upto"), body.get("orders")
    if not isinstance(after, str) or not (upto is None or isinstance(upto, str)):
        raise InvalidInput("after", "after must be a string and upto a string or null")
    if not isinstance(orders, list) or len(orders) > MAX_PAGE:
        raise InvalidInput("orders", f"orders must be a list of at most {MAX_PAGE}")
    for order in orders:
        if not (
            isinstance(order, dict)
            and isinstance(order.get("order_id"), str)
            and order.get("status") in ("pending", "confirmed", "failed")
        ):
            raise InvalidInput("orders", "each order needs an order_id and a status")
    return Page(after, upto, orders)


def ledger_blueprint(audit: LedgerAudit) -> Blueprint:
    """The participant's audit routes, called by the coordinator."""
    bp = Blueprint("ledger_audit", __name__, url_prefix="/audit")

    @bp.get("/ledger")
    def ledger() -> Any:
        return jsonify(audit.invariants())

    @bp.post("/orders")
    def orders() -> Any:
        return jsonify({"violations": audit.orders(page_of(json_body()))})

    @bp.get("/leftovers")
    def leftovers_route() -> Any:
        return jsonify(leftovers(audit.db, horizon_arg()))

    return bp


def leftovers_blueprint(db: Database) -> Blueprint:
    """Leftovers only, for a component that holds no ledger (the initiator, say)."""
    bp = Blueprint("leftovers_audit", __name__, url_prefix="/audit")

    @bp.get("/leftovers")
    def leftovers_route() -> Any:
        return jsonify(leftovers(db, horizon_arg()))

    return bp
