"""Phase 2 of many transactions in one request (`POST /xa/batch`, `POST /tcc/batch`)
against real Postgres: each item does what its own call would, once, and answers for
itself; a malformed batch is a 400 and changes nothing."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from flask import Flask

from paxkit.auth import SERVICE_HEADER
from paxkit.batch import MAX_ITEMS
from paxkit.config import Settings
from paxkit.db import Database
from paxkit.participant import create_participant_app
from services.inventory.app import SPEC as INVENTORY
from services.redpacket.app import SPEC as REDPACKET
from tests.conftest import TEST_ENV

SKU = "SKU-0043"
# A prepared branch holds its rows' locks: branches prepared side by side buy distinct SKUs.
SKUS = [f"SKU-{n:04d}" for n in range(44, 49)]
USER = 6
_ids = itertools.count(1)
HEADERS = {SERVICE_HEADER: TEST_ENV["PAXMART_SERVICE_TOKEN"]}


@pytest.fixture(scope="module")
def inventory(settings: Settings, scratch_db) -> tuple[Flask, Database]:
    db = scratch_db("inventory")
    return create_participant_app(INVENTORY, settings, db=db), db


@pytest.fixture(scope="module")
def redpacket(settings: Settings, scratch_db) -> tuple[Flask, Database]:
    db = scratch_db("redpacket")
    return create_participant_app(REDPACKET, settings, db=db), db


def post(app: Flask, path: str, body: Any) -> Any:
    return app.test_client().post(path, json=body, headers=HEADERS)


def new_gtid() -> str:
    return f"it-batch-{next(_ids)}"


def stock(db: Database, sku: str = SKU) -> dict[str, Any]:
    row = db.fetch_one("SELECT available, frozen, sold FROM products WHERE sku = :sku", sku=sku)
    assert row is not None
    return row


def wallet(db: Database) -> dict[str, Any]:
    row = db.fetch_one(
        "SELECT balance_cents, frozen_cents, spent_cents FROM wallets WHERE user_id = :u", u=USER
    )
    assert row is not None
    return row


def prepare(app: Flask, gtid: str, qty: int = 1, sku: str = SKU) -> None:
    body = {"gtid": gtid, "payload": {"order_id": f"o-{gtid}", "items": [{"sku": sku, "qty": qty}]}}
    reply = post(app, "/xa/prepare", body)
    assert reply.get_json()["vote"] == "yes", reply.get_data(as_text=True)


def xa_batch(app: Flask, op: str, gtids: list[str]) -> list[dict[str, Any]]:
    reply = post(app, "/xa/batch", {"op": op, "items": [{"gtid": g} for g in gtids]})
    assert reply.status_code == 200, reply.get_data(as_text=True)
    items: list[dict[str, Any]] = reply.get_json()["items"]
    return items


def test_one_request_commits_the_prepared_branches_of_many_transactions(inventory):
    app, db = inventory
    gtids = [new_gtid() for _ in SKUS]
    before = {sku: stock(db, sku) for sku in SKUS}
    for gtid, sku in zip(gtids, SKUS, strict=True):
        prepare(app, gtid, qty=2, sku=sku)
    assert {sku: stock(db, sku) for sku in SKUS} == before, "prepared branches are invisible"

    answers = xa_batch(app, "commit", gtids)
    assert answers == [{"gtid": g, "state": "committed"} for g in gtids]
    for sku in SKUS:
        was = before[sku]
        assert stock(db, sku) == {**was, "available": was["available"] - 2, "sold": was["sold"] + 2}

    again = xa_batch(app, "commit", gtids)
    assert again == [{"gtid": g, "state": "already_committed"} for g in gtids]
    assert [stock(db, sku)["sold"] for sku in SKUS] == [before[sku]["sold"] + 2 for sku in SKUS]


def test_each_item_answers_for_itself_and_a_conflict_is_that_items_answer(inventory):
    app, db = inventory
    committed, prepared, unknown = new_gtid(), new_gtid(), new_gtid()
    prepare(app, committed)
    xa_batch(app, "commit", [committed])
    prepare(app, prepared)  # the first one committed: its locks are gone
    before = stock(db)

    answers = xa_batch(app, "rollback", [committed, prepared, unknown])
    assert answers[0]["gtid"] == committed
    assert (answers[0]["status"], answers[0]["error"]["code"]) == (409, "branch_conflict")
    assert answers[1:] == [
        {"gtid": prepared, "state": "rolled_back"},
        {"gtid": unknown, "state": "rolled_back"},
    ]
    assert stock(db) == before, "the rolled back branch had never become visible"
    prepare_late = post(
        app, "/xa/prepare", {"gtid": unknown, "payload": {"items": [{"sku": SKU, "qty": 1}]}}
    )
    assert prepare_late.get_json()["vote"] == "no", "the tombstone blocks a late prepare"


def test_one_request_confirms_many_tries_in_one_local_transaction(redpacket):
    app, db = redpacket
    gtids = [new_gtid() for _ in range(4)]
    start = wallet(db)
    for gtid in gtids:
        body = {
            "gtid": gtid,
            "payload": {"order_id": f"o-{gtid}", "user_id": USER, "amount_cents": 100},
        }
        assert post(app, "/tcc/try", body).get_json()["effect"] == "applied"
    assert wallet(db)["frozen_cents"] == start["frozen_cents"] + 400

    items = [{"gtid": g, "payload": {"user_id": USER}} for g in gtids]
    reply = post(app, "/tcc/batch", {"op": "confirm", "items": items})
    assert reply.status_code == 200, reply.get_data(as_text=True)
    assert reply.get_json()["items"] == [
        {"gtid": g, "ok": True, "effect": "applied", "reason": None} for g in gtids
    ]
    assert wallet(db) == {
        "balance_cents": start["balance_cents"] - 400,
        "frozen_cents": start["frozen_cents"],
        "spent_cents": start["spent_cents"] + 400,
    }

    again = post(app, "/tcc/batch", {"op": "confirm", "items": items}).get_json()["items"]
    assert {item["effect"] for item in again} == {"duplicate"}
    assert wallet(db)["spent_cents"] == start["spent_cents"] + 400


def test_a_batch_of_cancels_without_tries_is_null_and_blocks_the_late_tries(redpacket):
    app, db = redpacket
    gtids = [new_gtid() for _ in range(3)]
    start = wallet(db)
    items = [{"gtid": g, "payload": {"user_id": USER, "amount_cents": 100}} for g in gtids]
    answers = post(app, "/tcc/batch", {"op": "cancel", "items": items}).get_json()["items"]
    assert [a["effect"] for a in answers] == ["null"] * 3
    late = post(app, "/tcc/try", {"gtid": gtids[0], "payload": items[0]["payload"]}).get_json()
    assert (late["ok"], late["effect"]) == (False, "refused")
    assert wallet(db) == start


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/xa/batch", {"items": [{"gtid": "g-1"}]}, "op"),
        ("/xa/batch", {"op": "prepare", "items": [{"gtid": "g-1"}]}, "op"),
        ("/xa/batch", {"op": "commit", "items": []}, "items"),
        ("/xa/batch", {"op": "commit", "items": "g-1"}, "items"),
        ("/xa/batch", {"op": "commit", "items": [{"gtid": "g"}] * (MAX_ITEMS + 1)}, "items"),
        ("/xa/batch", {"op": "commit", "items": ["g-1"]}, "items"),
        ("/xa/batch", {"op": "commit", "items": [{"gtid": "bad gtid"}]}, "gtid"),
        ("/xa/batch", {"op": "commit", "items": [{"gtid": "g-1", "reason": 7}]}, "reason"),
        ("/tcc/batch", {"op": "try", "items": [{"gtid": "g-1"}]}, "op"),
        ("/tcc/batch", {"op": "confirm", "items": [{"gtid": "g-1", "payload": "x"}]}, "payload"),
    ],
)
def test_a_malformed_batch_is_a_400_naming_the_field(inventory, redpacket, path, body, field):
    app, _ = redpacket if path.startswith("/tcc") else inventory
    reply = post(app, path, body)
    assert reply.status_code == 400, reply.get_data(as_text=True)
    error = reply.get_json()["error"]
    assert (error["code"], error["field"]) == ("invalid_field", field)


@pytest.mark.parametrize(
    ("path", "payload"),
    [
        ("/xa/prepare", {"items": [{"sku": SKU, "qty": 1}]}),
        ("/xa/prepare", {"order_id": "o-1", "items": "SKU-0043"}),
        ("/tcc/try", {"order_id": "o-1", "items": [{"qty": 1}]}),
    ],
)
def test_a_branch_payload_the_action_cannot_read_is_a_400_and_nothing_is_held(
    inventory, path, payload
):
    app, db = inventory
    gtid, before = new_gtid(), stock(db)
    reply = post(app, path, {"gtid": gtid, "payload": payload})
    assert reply.status_code == 400, reply.get_data(as_text=True)
    assert reply.get_json()["error"]["field"] == "payload"
    assert stock(db) == before
    assert db.fetch_all("SELECT gid FROM pg_prepared_xacts WHERE gid LIKE :g", g=f"{gtid}%") == []
    assert db.fetch_all("SELECT op FROM barrier WHERE gtid = :g", g=gtid) == []
