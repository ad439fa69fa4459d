"""Internal routes refuse bad input with a 400 in the contract's shape, never a 500
(each case found by the schema-driven fuzzer)."""

from __future__ import annotations

import pytest

from coordinator.app import create_app as coordinator_app
from paxkit.auth import SERVICE_HEADER
from services.order.app import create_app as order_app
from tests.conftest import TEST_ENV

pytestmark = pytest.mark.integration

CREDENTIAL = {SERVICE_HEADER: TEST_ENV["PAXMART_SERVICE_TOKEN"]}


@pytest.fixture(scope="module")
def coordinator(fresh_databases):
    return coordinator_app(fresh_databases).test_client()


@pytest.fixture(scope="module")
def order(fresh_databases):
    return order_app(fresh_databases).test_client()


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
