"""The cross-service consistency audit of DESIGN.md's invariants, over all five databases.

An auditor is an operator's tool: it reads every database directly (read-only queries)
rather than trusting any service's own account of itself.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from paxkit.db import Database

Violation = dict[str, Any]


class Auditor:
    def __init__(self, dbs: dict[str, Database], horizon_s: float) -> None:
        self.dbs = dbs
        self.horizon_s = horizon_s

    def run(self) -> dict[str, Any]:
        violations: list[Violation] = []
        checked: dict[str, int] = {}
        checked["skus"] = self._stock(violations)
        checked["wallets"] = self._wallets(violations)
        checked["coupons"] = self._coupons(violations)
        checked["orders"] = self._orders(violations)
        checked["prepared_xacts"] = self._prepared(violations)
        checked["transactions"] = self._transactions(violations)
        checked["unsent_events"] = self._outboxes(violations)
        return {"ok": not violations, "violations": violations, "checked": checked}

    def _stock(self, violations: list[Violation]) -> int:
        rows = self.dbs["inventory"].fetch_all(
            "SELECT p.sku, p.initial_stock, p.available, p.frozen, p.sold, "
            "COALESCE(SUM(m.qty) FILTER (WHERE m.state = 'sold'), 0) AS ledger_sold, "
            "COALESCE(SUM(m.qty) FILTER (WHERE m.state = 'frozen'), 0) AS ledger_frozen "
            "FROM products p LEFT JOIN stock_movements m ON m.sku = p.sku GROUP BY p.sku"
        )
        for r in rows:
            if r["available"] + r["frozen"] + r["sold"] != r["initial_stock"] or r["available"] < 0:
                violations.append({"check": "stock_conservation", **_plain(r)})
            if r["sold"] != r["ledger_sold"] or r["frozen"] != r["ledger_frozen"]:
                violations.append({"check": "stock_ledger", **_plain(r)})
        return len(rows)

    def _wallets(self, violations: list[Violation]) -> int:
        rows = self.dbs["redpacket"].fetch_all(
            "SELECT w.user_id, w.initial_cents, w.balance_cents, w.frozen_cents, w.spent_cents, "
            "COALESCE(SUM(h.amount_cents) FILTER (WHERE h.state = 'spent'), 0) AS ledger_spent, "
            "COALESCE(SUM(h.amount_cents) FILTER (WHERE h.state = 'frozen'), 0) AS ledger_frozen "
            "FROM wallets w LEFT JOIN wallet_holds h ON h.user_id = w.user_id GROUP BY w.user_id"
        )
        for r in rows:
            total = r["balance_cents"] + r["frozen_cents"] + r["spent_cents"]
            if total != r["initial_cents"] or r["balance_cents"] < 0:
                violations.append({"check": "wallet_conservation", **_plain(r)})
            if r["spent_cents"] != r["ledger_spent"] or r["frozen_cents"] != r["ledger_frozen"]:
                violations.append({"check": "wallet_ledger", **_plain(r)})
        return len(rows)

    def _coupons(self, violations: list[Violation]) -> int:
        rows = self.dbs["coupon"].fetch_all(
            "SELECT order_id, count(*) AS n FROM coupons WHERE order_id IS NOT NULL "
            "GROUP BY order_id HAVING count(*) > 1"
        )
        for r in rows:
            violations.append({"check": "coupon_per_order", **_plain(r)})
        total = self.dbs["coupon"].fetch_one("SELECT count(*) AS n FROM coupons")
        return int(total["n"]) if total else 0

    def _orders(self, violations: list[Violation]) -> int:
        orders = self.dbs["order"].fetch_all(
            "SELECT order_id, status, items, coupon_id, discount_cents, red_packet_cents, "
            "created_at < now() - make_interval(secs => :h) AS stale FROM orders",
            h=self.horizon_s,
        )
        sold = self._effects("inventory", "SELECT order_id, sku, qty, state FROM stock_movements")
        coupons = self._effects(
            "coupon",
            "SELECT order_id, coupon_id, status AS state FROM coupons WHERE order_id IS NOT NULL",
        )
        holds = self._effects("redpacket", "SELECT order_id, amount_cents, state FROM wallet_holds")
        known = set()
        for order in orders:
            known.add(order["order_id"])
            effects = {
                "stock": sold.get(order["order_id"], []),
                "coupon": coupons.get(order["order_id"], []),
                "redpacket": holds.get(order["order_id"], []),
            }
            violations.extend(_order_violations(order, effects))
        for name, effects in (("stock", sold), ("coupon", coupons), ("redpacket", holds)):
            for order_id in set(effects) - known:
                violations.append(
                    {"check": "effect_without_order", "effect": name, "order_id": order_id}
                )
        return len(orders)

    def _effects(self, db: str, sql: str) -> dict[str, list[dict[str, Any]]]:
        by_order: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in self.dbs[db].fetch_all(sql):
            by_order[row["order_id"]].append(row)
        return by_order

    def _prepared(self, violations: list[Violation]) -> int:
        rows = self.dbs["coordinator"].fetch_all(
            "SELECT gid, database, extract(epoch FROM now() - prepared) AS age_s "
            "FROM pg_prepared_xacts"
        )
        for r in rows:
            if float(r["age_s"]) > self.horizon_s:
                violations.append({"check": "prepared_left_behind", **_plain(r)})
        # Services may live in other clusters (docker-compose); ask each one as well.
        for name in ("order", "inventory", "coupon", "redpacket"):
            url, home = self.dbs[name].engine.url, self.dbs["coordinator"].engine.url
            if (url.host, url.port) == (home.host, home.port):
                continue  # same cluster: already counted
            for r in self.dbs[name].fetch_all(
                "SELECT gid, database, extract(epoch FROM now() - prepared) AS age_s "
                "FROM pg_prepared_xacts"
            ):
                rows.append(r)
                if float(r["age_s"]) > self.horizon_s:
                    violations.append({"check": "prepared_left_behind", **_plain(r)})
        return len(rows)

    def _outboxes(self, violations: list[Violation]) -> int:
        """Events committed but still not published after the horizon (a stuck relay)."""
        unsent = 0
        for name in ("coordinator", "order", "inventory", "coupon", "redpacket"):
            row = self.dbs[name].fetch_one(
                "SELECT count(*) AS n, count(*) FILTER (WHERE created_at < now() - "
                "make_interval(secs => :h)) AS old FROM outbox WHERE sent_at IS NULL",
                h=self.horizon_s,
            )
            if row is None:
                continue
            unsent += int(row["n"])
            if row["old"]:
                violations.append(
                    {"check": "outbox_not_relayed", "database": name, "events": int(row["old"])}
                )
        return unsent

    def _transactions(self, violations: list[Violation]) -> int:
        stuck = self.dbs["coordinator"].fetch_all(
            "SELECT gtid, status, updated_at FROM global_txns "
            "WHERE status IN ('preparing', 'submitted', 'committing', 'aborting') "
            "AND updated_at < now() - make_interval(secs => :h)",
            h=self.horizon_s,
        )
        for r in stuck:
            violations.append({"check": "transaction_stuck", **_plain(r)})
        total = self.dbs["coordinator"].fetch_one("SELECT count(*) AS n FROM global_txns")
        return int(total["n"]) if total else 0


def _order_violations(
    order: dict[str, Any], effects: dict[str, list[dict[str, Any]]]
) -> list[Violation]:
    """Atomicity of one order: confirmed has every effect, failed has none."""
    order_id, status = order["order_id"], order["status"]
    if status == "pending":
        return [{"check": "order_stuck_pending", "order_id": order_id}] if order["stale"] else []
    applied = {
        "stock": {e["sku"]: e["qty"] for e in effects["stock"] if e["state"] == "sold"},
        "coupon": [e["coupon_id"] for e in effects["coupon"] if e["state"] == "used"],
        "redpacket": sum(e["amount_cents"] for e in effects["redpacket"] if e["state"] == "spent"),
    }
    held = [e for k in ("stock", "redpacket") for e in effects[k] if e["state"] == "frozen"]
    held += [e for e in effects["coupon"] if e["state"] == "reserved"]
    problems: list[Violation] = []
    if held:
        problems.append({"check": "order_holds_left", "order_id": order_id, "status": status})
    if status == "failed":
        if applied["stock"] or applied["coupon"] or applied["redpacket"]:
            problems.append(
                {"check": "failed_order_with_effects", "order_id": order_id, "effects": applied}
            )
        return problems
    expected_stock = {i["sku"]: i["qty"] for i in order["items"]}
    expected_coupon = [order["coupon_id"]] if order["discount_cents"] > 0 else []
    if (
        applied["stock"] != expected_stock
        or applied["coupon"] != expected_coupon
        or applied["redpacket"] != order["red_packet_cents"]
    ):
        problems.append(
            {"check": "confirmed_order_incomplete", "order_id": order_id, "effects": applied}
        )
    return problems


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (v if isinstance(v, int | float | str | bool) or v is None else str(v))
        for k, v in row.items()
    }
