"""Internal routes refuse bad input with a 400 in the contract's shape, never a 500
(each case found by the schema-driven fuzzer)."""

from __future__ import annotations

import pytest

from coordinator.app import create_app as coordinator_app
from paxkit.auth import SERVICE_HEADER
from services.order.app import create_app as order_app
from services.redpacket.app import create_app as redpacket_app
from tests.conftest import TEST_ENV

pytestmark = pytest.mark.integration

CREDENTIAL = {SERVICE_HEADER: TEST_ENV["PAXMART_SERVICE_TOKEN"]}


@pytest.fixture(scope="module")
def coordinator(fresh_databases):
    return coordinator_app(fresh_databases).test_client()


@pytest.fixture(scope="module")
def order(fresh_databases):
    return order_app(fresh_databases).test_client()


@pytest.fixture(scope="module")
def redpacket(fresh_databases):
    return redpacket_app(fresh_databases).test_client()


@pytest.mark.parametrize(
    ("label", "case"),
    [
        ("zero", {"amount_cents": 0}),
        ("negative", {"amount_cents": -5}),
        ("false-user", {"user_id": False}),
        ("text-user", {"user_id": "1x"}),
    ],
)
def test_a_saga_action_whose_payload_does_not_fit_the_ledger_is_a_400(redpacket, dbs, label, case):
    """The fuzzer's cases: a zero red packet reached the table's CHECK, and a JSON `false`
    for the user id met no integer operator; both were 500s."""
    gtid = f"gtx-rule-{label}"
    payload = {"order_id": "ord-rule-1", "user_id": 1, "amount_cents": 100, **case}
    before = dbs["redpacket"].fetch_one("SELECT * FROM wallets WHERE user_id = 1")
    response = redpacket.post(
        "/saga/action", json={"gtid": gtid, "payload": payload}, headers=CREDENTIAL
    )
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"]["field"] == "payload"
    left = dbs["redpacket"].fetch_one(
        "SELECT (SELECT count(*) FROM wallet_holds WHERE gtid = :gtid) AS holds, "
        "(SELECT count(*) FROM barrier WHERE gtid = :gtid) AS barriers",
        gtid=gtid,
    )
    assert left == {"holds": 0, "barriers": 0}
    assert dbs["redpacket"].fetch_one("SELECT * FROM wallets WHERE user_id = 1") == before


@pytest.mark.parametrize("mode", [["2pc"], {"m": 1}, 7, "4pc"])
def test_a_check_back_in_no_known_mode_is_a_400(coordinator, mode):
    response = coordinator.post(
        "/transactions/gtx-input-1/resolve", json={"mode": mode}, headers=CREDENTIAL
    )
    assert response.status_code == 400
    assert response.get_json()["error"]["field"] == "mode"


@pytest.mark.parametrize("after", ["ord-\x00", "ord 1", "ö", "x" * 65])
def test_an_audit_page_after_no_order_id_is_a_400(order, after):
    response = order.get("/audit/orders", query_string={"after": after}, headers=CREDENTIAL)
    assert response.status_code == 400
    assert response.get_json()["error"]["field"] == "after"


def test_an_audit_page_after_an_order_id_is_served(order):
    response = order.get("/audit/orders", query_string={"after": "ord-0"}, headers=CREDENTIAL)
    assert response.status_code == 200
    assert isinstance(response.get_json()["items"], list)
