"""The verdict of a chaos run, read from the databases themselves.

`read_snapshot` reads every database of the chaos stack directly (not through any
service), `check` compares what it found with what was seeded and with what the clients
were told, and `audit` asks the stack's own `/admin/audit`, which the report holds
against this verdict. `check` is a pure function of rows, unit-tested on fake ones.

A request that got a 5xx or no answer is a Jepsen "info" outcome: it is never assumed
to have failed. The gateway's Idempotency-Key record names the order it placed, if it
placed one; that order must be absent or settled like any other.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg2
import psycopg2.extras
import requests

from infra.chaos.history import Op

log = logging.getLogger(__name__)

Row = dict[str, Any]
UNFINISHED = ("preparing", "submitted", "committing", "aborting")
AUDIT_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Violation:
    check: str
    detail: str
    order_id: str | None = None


@dataclass(frozen=True)
class Snapshot:
    """The rows the verdict rests on, from every database of the stack."""

    products: list[Row] = field(default_factory=list)  # sku, available, frozen, sold
    movements: list[Row] = field(default_factory=list)  # order_id, sku, qty, state
    coupons: list[Row] = field(default_factory=list)  # coupon_id, status, order_id
    wallets: list[Row] = field(default_factory=list)  # user_id, balance/frozen/spent_cents
    holds: list[Row] = field(default_factory=list)  # order_id, user_id, amount_cents, state
    orders: list[Row] = field(default_factory=list)  # order_id, user_id, status, items, ...
    txns: list[Row] = field(default_factory=list)  # gtid, status
    keys: list[Row] = field(default_factory=list)  # key, order_id, status (gateway)
    prepared: dict[str, int] = field(default_factory=dict)  # database -> prepared xacts
    unsent: dict[str, int] = field(default_factory=dict)  # database -> unsent outbox rows
    dead_letters: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Seed:
    """What the databases held before the load: stock per SKU, balance per wallet."""

    stock: dict[str, int]
    balance: dict[int, int]

    @classmethod
    def of(cls, snap: Snapshot) -> Seed:
        return cls(
            {p["sku"]: p["available"] + p["frozen"] + p["sold"] for p in snap.products},
            {
                w["user_id"]: w["balance_cents"] + w["frozen_cents"] + w["spent_cents"]
                for w in snap.wallets
            },
        )


@dataclass(frozen=True)
class Verdict:
    violations: list[Violation]
    info: dict[str, int]  # how the info outcomes resolved: absent / confirmed / failed
    orders: dict[str, Row]  # order id -> its row


def check(seed: Seed, snap: Snapshot, ops: Iterable[Op]) -> Verdict:
    """Every invariant of issue 11 on one snapshot."""
    orders = {o["order_id"]: o for o in snap.orders}
    ops = [op for op in ops if op.is_order]
    found = [
        *_stock(seed, snap, orders),
        *_money(seed, snap, orders),
        *_coupons(snap, orders),
        *_effects(snap, orders),
        *_transactions(snap, orders),
        *_answers(snap, orders, ops),
        *_leftovers(snap),
    ]
    return Verdict(found, _info(snap, orders, ops), orders)


def _confirmed(orders: Mapping[str, Row]) -> Iterator[Row]:
    return (o for o in orders.values() if o["status"] == "confirmed")


def _stock(seed: Seed, snap: Snapshot, orders: Mapping[str, Row]) -> Iterator[Violation]:
    sold: Counter[str] = Counter()
    for order in _confirmed(orders):
        for item in order["items"]:
            sold[item["sku"]] += int(item["qty"])
    for p in snap.products:
        sku, seeded = p["sku"], seed.stock.get(p["sku"], 0)
        if seeded != p["available"] + p["frozen"] + sold[sku]:
            detail = f"{sku}: seeded {seeded} != available {p['available']} + frozen "
            yield Violation("stock_not_conserved", f"{detail}{p['frozen']} + sold {sold[sku]}")
        if p["frozen"]:
            yield Violation("stock_frozen_left", f"{sku}: {p['frozen']} units frozen")
        if p["sold"] != sold[sku]:
            yield Violation("stock_sold_mismatch", f"{sku}: sold {p['sold']} != {sold[sku]}")


def _money(seed: Seed, snap: Snapshot, orders: Mapping[str, Row]) -> Iterator[Violation]:
    spent: Counter[int] = Counter()
    for order in _confirmed(orders):
        spent[order["user_id"]] += int(order["red_packet_cents"])
    for w in snap.wallets:
        user, seeded = w["user_id"], seed.balance.get(w["user_id"], 0)
        if seeded != w["balance_cents"] + w["frozen_cents"] + spent[user]:
            detail = f"user {user}: seeded {seeded} != balance {w['balance_cents']} + frozen "
            yield Violation(
                "money_not_conserved", f"{detail}{w['frozen_cents']} + spent {spent[user]}"
            )
        if w["frozen_cents"]:
            yield Violation("money_frozen_left", f"user {user}: {w['frozen_cents']} frozen")
        if w["spent_cents"] != spent[user]:
            yield Violation("money_spent_mismatch", f"user {user}: {w['spent_cents']}")


def _coupon_applies(order: Row) -> bool:
    return bool(order.get("coupon_id")) and int(order["discount_cents"]) > 0


def _coupons(snap: Snapshot, orders: Mapping[str, Row]) -> Iterator[Violation]:
    by_id = {c["coupon_id"]: c for c in snap.coupons}
    for order in _confirmed(orders):
        if not _coupon_applies(order):
            continue
        coupon = by_id.get(order["coupon_id"], {})
        if coupon.get("status") != "used" or coupon.get("order_id") != order["order_id"]:
            yield Violation(
                "coupon_not_used_by_its_order",
                f"{order['coupon_id']} is {coupon.get('status')} by {coupon.get('order_id')}",
                order["order_id"],
            )
    for c in snap.coupons:
        if c["status"] == "available":
            continue
        holder = orders.get(c["order_id"] or "")
        if (
            c["status"] != "used"
            or holder is None
            or holder["status"] != "confirmed"
            or holder.get("coupon_id") != c["coupon_id"]
            or not _coupon_applies(holder)
        ):
            yield Violation("coupon_held_wrongly", f"{c['coupon_id']} {c['status']}", c["order_id"])


def _effects(snap: Snapshot, orders: Mapping[str, Row]) -> Iterator[Violation]:
    """Each order is all or nothing: a confirmed one has every effect, a failed one none."""
    moves: dict[str, dict[str, int]] = defaultdict(dict)
    live_moves: set[str] = set()
    for m in snap.movements:
        if m["state"] == "sold":
            moves[m["order_id"]][m["sku"]] = int(m["qty"])
        if m["state"] in ("sold", "frozen"):
            live_moves.add(m["order_id"])
    spent = {h["order_id"]: int(h["amount_cents"]) for h in snap.holds if h["state"] == "spent"}
    live_holds = {h["order_id"] for h in snap.holds if h["state"] in ("spent", "frozen")}
    held = {c["order_id"] for c in snap.coupons if c["status"] != "available"}
    for order_id, order in orders.items():
        if order["status"] == "pending":
            yield Violation("order_pending", "never settled", order_id)
        elif order["status"] == "failed":
            if order_id in live_moves | live_holds | held:
                yield Violation("failed_order_with_effects", "stock, money or coupon", order_id)
        else:
            wanted = {i["sku"]: int(i["qty"]) for i in order["items"]}
            money = int(order["red_packet_cents"])
            if moves.get(order_id, {}) != wanted or spent.get(order_id, 0) != money:
                detail = f"stock {moves.get(order_id)} of {wanted}, money {spent.get(order_id)}"
                yield Violation("confirmed_order_incomplete", detail, order_id)
    for order_id in sorted((live_moves | live_holds | held) - set(orders)):
        yield Violation("effect_without_order", "an effect names no known order", order_id)


def _transactions(snap: Snapshot, orders: Mapping[str, Row]) -> Iterator[Violation]:
    status = {t["gtid"]: t["status"] for t in snap.txns}
    for gtid, state in status.items():
        if state in UNFINISHED:
            yield Violation("transaction_unfinished", f"{gtid} {state}")
    for order_id, order in orders.items():
        gtid = order.get("gtid")
        if not gtid:
            continue
        if order["status"] == "confirmed" and status.get(gtid) != "committed":
            yield Violation("confirmed_without_commit", f"{gtid} {status.get(gtid)}", order_id)
        if order["status"] == "failed" and status.get(gtid) == "committed":
            yield Violation("failed_but_committed", gtid, order_id)


def _answers(snap: Snapshot, orders: Mapping[str, Row], ops: list[Op]) -> Iterator[Violation]:
    """What clients were told holds, and one key never placed two orders."""
    placed = {k["key"]: k["order_id"] for k in snap.keys}
    seen: dict[str, set[str]] = defaultdict(set)
    for op in ops:
        if op.order_id:
            seen[op.key].add(op.order_id)
        order = orders.get(op.order_id or "")
        status = order["status"] if order else None
        if (op.status, op.order_status) == (201, "confirmed") and status != "confirmed":
            yield Violation("confirmed_answer_lost", f"key {op.key}", op.order_id)
        if (op.status, op.order_status) == (409, "failed") and status == "confirmed":
            yield Violation("failed_answer_but_confirmed", f"key {op.key}", op.order_id)
    for key, ids in seen.items():
        if key in placed:
            ids = ids | {placed[key]}
        if len(ids) > 1:
            yield Violation("key_two_orders", f"key {key}: {sorted(ids)}")
    for order_id in sorted(set(orders) - set(placed.values())):
        yield Violation("order_without_request", "no Idempotency-Key record names it", order_id)


def _leftovers(snap: Snapshot) -> Iterator[Violation]:
    for check_name, counts in (
        ("prepared_xacts_left", snap.prepared),
        ("outbox_unsent", snap.unsent),
        ("dead_letters", snap.dead_letters),
    ):
        for database, n in sorted(counts.items()):
            if n:
                yield Violation(check_name, f"{database}: {n}")


def _info(snap: Snapshot, orders: Mapping[str, Row], ops: list[Op]) -> dict[str, int]:
    """How every 5xx / unanswered request turned out, by the order its key placed."""
    placed = {k["key"]: k["order_id"] for k in snap.keys}
    outcomes: Counter[str] = Counter()
    for op in ops:
        if op.info:
            order = orders.get(placed.get(op.key, ""))
            outcomes[order["status"] if order else "absent"] += 1
    return dict(outcomes)


def stuck(snap: Snapshot) -> dict[str, int]:
    """What keeps the stack from being quiescent; empty when nothing does."""
    counts = {
        "pending_orders": sum(o["status"] == "pending" for o in snap.orders),
        "unfinished_txns": sum(t["status"] in UNFINISHED for t in snap.txns),
        "frozen_skus": sum(bool(p["frozen"]) for p in snap.products),
        "frozen_wallets": sum(bool(w["frozen_cents"]) for w in snap.wallets),
        "reserved_coupons": sum(c["status"] == "reserved" for c in snap.coupons),
        "prepared_xacts": sum(snap.prepared.values()),
        "unsent_outbox": sum(snap.unsent.values()),
    }
    return {name: n for name, n in counts.items() if n}


# ------------------------------------------------------------------ reading the databases

QUERIES = {
    "inventory": {
        "products": "SELECT sku, available, frozen, sold FROM products",
        "movements": "SELECT order_id, sku, qty, state FROM stock_movements",
    },
    "coupon": {"coupons": "SELECT coupon_id, status, order_id FROM coupons"},
    "redpacket": {
        "wallets": "SELECT user_id, balance_cents, frozen_cents, spent_cents FROM wallets",
        "holds": "SELECT order_id, user_id, amount_cents, state FROM wallet_holds",
    },
    "order": {
        "orders": "SELECT order_id, user_id, status, items, coupon_id, discount_cents, "
        "red_packet_cents, gtid FROM orders"
    },
    "coordinator": {"txns": "SELECT gtid, status FROM global_txns"},
    "gateway": {"keys": "SELECT key, order_id, status FROM idempotency_keys"},
}


@contextlib.contextmanager
def _cursor(url: str) -> Iterator[Any]:
    conn = psycopg2.connect(
        url,
        connect_timeout=5,
        options="-c statement_timeout=30000 -c default_transaction_read_only=on",
    )
    conn.autocommit = True
    try:
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            yield cur
    finally:
        conn.close()


def _count(cur: Any, sql: str, table: str) -> int:
    cur.execute("SELECT to_regclass(%s) IS NOT NULL AS present", (table,))
    if not cur.fetchone()["present"]:
        return 0
    cur.execute(sql)
    return int(cur.fetchone()["n"])


def read_snapshot(db_urls: Mapping[str, str]) -> Snapshot:
    """Every table the verdict needs, straight from each component's database."""
    rows: dict[str, Any] = {"prepared": {}, "unsent": {}, "dead_letters": {}}
    for database, url in db_urls.items():
        with _cursor(url) as cur:
            for name, sql in QUERIES.get(database, {}).items():
                cur.execute(sql)
                rows[name] = [dict(r) for r in cur.fetchall()]
            cur.execute(
                "SELECT count(*) AS n FROM pg_prepared_xacts WHERE database = current_database()"
            )
            rows["prepared"][database] = int(cur.fetchone()["n"])
            unsent = "SELECT count(*) AS n FROM outbox WHERE sent_at IS NULL"
            rows["unsent"][database] = _count(cur, unsent, "public.outbox")
            dead = "SELECT count(*) AS n FROM dead_letters"
            rows["dead_letters"][database] = _count(cur, dead, "public.dead_letters")
    return Snapshot(**rows)


@dataclass(frozen=True)
class AuditAnswer:
    """What the stack's own /admin/audit said."""

    status: int | None
    ok: bool
    violations: list[Row]
    error: str = ""


def audit(base_url: str, admin_token: str) -> AuditAnswer:
    try:
        response = requests.get(
            f"{base_url}/admin/audit",
            headers={"Authorization": f"Bearer {admin_token}"},
            timeout=AUDIT_TIMEOUT_S,
        )
    except requests.RequestException as exc:
        return AuditAnswer(None, False, [], repr(exc))
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code != 200:
        return AuditAnswer(response.status_code, False, [], response.text[:300])
    return AuditAnswer(200, bool(body.get("ok")), list(body.get("violations", [])))


def compared(verdict: Verdict, answer: AuditAnswer) -> list[Violation]:
    """The audit must answer, and agree with the databases on whether anything is wrong."""
    if answer.status != 200:
        return [Violation("audit_unavailable", f"{answer.status} {answer.error}")]
    if answer.ok == (not verdict.violations):
        return []
    detail = (
        f"audit ok={answer.ok} ({len(answer.violations)}), checker found {len(verdict.violations)}"
    )
    return [Violation("audit_disagrees", detail)]
