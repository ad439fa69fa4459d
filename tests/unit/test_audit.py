"""The audit's logic without servers: a participant's verdict per order, the coordinator's
paging (each page goes to every participant with its id range), and its search of split
3pc outcomes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from coordinator.audit import Auditor, split_of
from paxkit.audit import HoldStates, Ledger, LedgerAudit, Page
from paxkit.errors import InvalidInput

pytestmark = pytest.mark.unit

LEDGER = Ledger(
    checked="things",
    count_sql="count",
    invariants=(),
    effects_sql="effects",
    claims=lambda part: {str(i["sku"]): int(i["qty"]) for i in part["items"]},
)


class FakeDb:
    """Answers the effects query from rows in memory, honouring the page's id range."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def fetch_all(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        upto = params.get("upto")
        return [
            r
            for r in self.rows
            if r["order_id"] > params["after"] and (upto is None or r["order_id"] <= upto)
        ]


def effect(order_id: str, state: str, sku: str = "SKU-1", qty: int = 2) -> dict[str, Any]:
    return {"order_id": order_id, "state": state, "item": sku, "amount": qty}


def order(order_id: str, status: str, qty: int | None = 2) -> dict[str, Any]:
    part = None if qty is None else {"items": [{"sku": "SKU-1", "qty": qty}]}
    return {"order_id": order_id, "status": status, "part": part}


def verdict(rows: list[dict[str, Any]], orders: list[dict[str, Any]], upto: str | None = None):
    audit = LedgerAudit("stock", FakeDb(rows), LEDGER, HoldStates("frozen", "sold"))  # type: ignore[arg-type]
    return sorted((v["check"], v["order_id"]) for v in audit.orders(Page("", upto, orders)))


def test_a_confirmed_order_with_exactly_its_part_applied_is_clean():
    assert verdict([effect("o1", "sold")], [order("o1", "confirmed")]) == []


def test_a_confirmed_order_with_the_wrong_amount_or_none_is_incomplete():
    assert verdict([effect("o1", "sold", qty=1)], [order("o1", "confirmed")]) == [
        ("confirmed_order_incomplete", "o1")
    ]
    assert verdict([], [order("o2", "confirmed")]) == [("confirmed_order_incomplete", "o2")]


def test_a_failed_order_must_leave_no_effect_and_no_order_a_hold():
    rows = [effect("o1", "sold"), effect("o2", "released"), effect("o3", "frozen")]
    orders = [order("o1", "failed"), order("o2", "failed"), order("o3", "confirmed")]
    assert verdict(rows, orders) == [
        ("failed_order_with_effects", "o1"),
        ("order_holds_left", "o3"),
    ]


def test_an_order_this_participant_has_no_part_in_must_have_no_effect_here():
    assert verdict([], [order("o1", "confirmed", qty=None)]) == []
    assert verdict([effect("o1", "sold")], [order("o1", "confirmed", qty=None)]) == [
        ("confirmed_order_incomplete", "o1")
    ]


def test_effects_of_unknown_orders_are_reported_only_within_the_page_range():
    rows = [effect("o1", "sold"), effect("o5", "sold"), effect("o9", "sold")]
    assert verdict(rows, [order("o1", "confirmed")], upto="o5") == [("effect_without_order", "o5")]
    assert verdict(rows, [order("o1", "confirmed")]) == [
        ("effect_without_order", "o5"),
        ("effect_without_order", "o9"),
    ]


@dataclass
class Reply:
    status: int
    body: Any

    @property
    def ok(self) -> bool:
        return self.status == 200


class FakeInitiator:
    def __init__(self, order_ids: list[str], page: int) -> None:
        self.order_ids = order_ids
        self.page = page

    def get(self, path: str, params: dict[str, Any], **_: Any) -> Reply:
        if path == "/audit/leftovers":
            return Reply(200, LEFTOVERS)
        after = params["after"]
        ids = [i for i in self.order_ids if i > after][: self.page + 1]
        items = [{"order_id": i, "status": "confirmed", "stale": False, "parts": {}} for i in ids]
        more = len(ids) > self.page
        return Reply(
            200, {"items": items[: self.page], "next": ids[self.page - 1] if more else None}
        )


class FakeParticipant:
    def __init__(self) -> None:
        self.pages: list[tuple[str, str | None, int]] = []

    def get(self, path: str, **_: Any) -> Reply:
        if path == "/audit/ledger":
            return Reply(200, {"violations": [], "checked": {"things": 3}})
        return Reply(200, LEFTOVERS)

    def post(self, path: str, json: dict[str, Any], **_: Any) -> Reply:
        self.pages.append((json["after"], json["upto"], len(json["orders"])))
        return Reply(200, {"violations": []})


class FakeLog:
    db = None

    def stuck(self, older_than_s: float) -> list[dict[str, Any]]:
        return []

    def count(self) -> int:
        return 0

    def of_mode(self, mode: str, after: str, limit: int) -> list[dict[str, Any]]:
        return []


LEFTOVERS = {"prepared": [], "prepared_total": 0, "unsent_events": 0, "unsent_past_horizon": 0}


def test_the_audit_pages_through_orders_and_chains_the_id_ranges(monkeypatch):
    monkeypatch.setattr("coordinator.audit.PAGE", 2)
    monkeypatch.setattr("coordinator.audit.leftovers", lambda db, h: LEFTOVERS)
    participant = FakeParticipant()
    ids = [f"o{n}" for n in range(1, 6)]
    auditor = Auditor(
        FakeLog(),  # type: ignore[arg-type]
        {"stock": participant},  # type: ignore[dict-item]
        {"shop": FakeInitiator(ids, page=2)},  # type: ignore[dict-item]
        horizon_s=8,
    )
    result = auditor.run()
    assert result["ok"] and result["checked"]["orders"] == 5
    assert participant.pages == [("", "o2", 2), ("o2", "o4", 2), ("o4", None, 1)]


def branch(state: str, by_timeout: bool = False) -> dict[str, Any]:
    return {"state": state, "by_timeout": by_timeout}


def test_a_branch_committed_while_another_aborted_is_a_split_naming_both():
    branches = {
        "inventory": branch("aborted"),
        "redpacket": branch("committed", by_timeout=True),
        "coupon": branch("aborted"),
    }
    assert split_of("gtx-1", "aborted", branches) == {
        "check": "threepc_split",
        "gtid": "gtx-1",
        "status": "aborted",
        "committed": ["redpacket"],
        "aborted": ["coupon", "inventory"],
        "by_timeout": ["redpacket"],
    }


@pytest.mark.parametrize(
    "states",
    [
        {"inventory": "committed", "coupon": "committed"},
        {"inventory": "aborted", "coupon": "aborted"},
        {"inventory": "uncertain", "coupon": "aborted"},  # an abort under way
        {"inventory": "committed", "coupon": "uncertain"},
        {},
    ],
)
def test_one_outcome_everywhere_or_one_under_way_is_no_split(states):
    assert split_of("gtx-1", "aborting", {n: branch(s) for n, s in states.items()}) is None


class ThreePcLog(FakeLog):
    """3pc transactions by gtid, paged as TxnLog.of_mode does."""

    def __init__(self, gtids: list[str]) -> None:
        self.gtids = gtids

    def of_mode(self, mode: str, after: str, limit: int) -> list[dict[str, Any]]:
        assert mode == "3pc"
        return [{"gtid": g, "status": "aborted"} for g in self.gtids if g > after][:limit]


class ThreePcParticipant(FakeParticipant):
    def __init__(self, states: dict[str, str]) -> None:
        super().__init__()
        self.states = states
        self.asked: list[list[str]] = []

    def post(self, path: str, json: dict[str, Any], **kwargs: Any) -> Reply:
        if path != "/audit/3pc":
            return super().post(path, json, **kwargs)
        self.asked.append(json["gtids"])
        found = {g: branch(self.states[g]) for g in json["gtids"] if g in self.states}
        return Reply(200, {"branches": found})


def test_the_audit_pages_through_3pc_transactions_and_reports_each_split(monkeypatch):
    monkeypatch.setattr("coordinator.audit.PAGE", 2)
    monkeypatch.setattr("coordinator.audit.leftovers", lambda db, h: LEFTOVERS)
    gtids = ["g1", "g2", "g3"]
    stock = ThreePcParticipant({"g1": "committed", "g2": "committed", "g3": "committed"})
    wallet = ThreePcParticipant({"g1": "committed", "g2": "aborted"})
    auditor = Auditor(
        ThreePcLog(gtids),  # type: ignore[arg-type]
        {"stock": stock, "wallet": wallet},  # type: ignore[dict-item]
        {"shop": FakeInitiator([], page=2)},  # type: ignore[dict-item]
        horizon_s=8,
    )
    result = auditor.run()
    assert not result["ok"]
    found = [(v["check"], v["gtid"], v["committed"], v["aborted"]) for v in result["violations"]]
    assert found == [("threepc_split", "g2", ["stock"], ["wallet"])]
    assert result["checked"]["threepc_transactions"] == 3
    assert stock.asked == [["g1", "g2"], ["g3"]]


@pytest.mark.parametrize("part", [{}, {"items": [{"sku": "SKU-1"}]}, {"items": "x"}])
def test_a_part_the_participant_cannot_read_is_a_400(part):
    """Found by the schema fuzzer: a KeyError in the ledger's claims answered 500."""
    confirmed = {"order_id": "o1", "status": "confirmed", "part": part}
    with pytest.raises(InvalidInput) as refused:
        verdict([effect("o1", "sold")], [confirmed])
    assert refused.value.extra == {"field": "orders"}
