"""The dashboard's parts that need no server: its session and CSRF checks (on the gateway
app, refused before any store is touched), the overview read from metrics text, the
change log in words, the audit's table and a transaction's diagram."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient

from gateway.app import create_app
from gateway.ui.diagram import transaction_svg
from gateway.ui.records import TxnRow, audit, state_in_words
from gateway.ui.session import Sessions
from gateway.ui.telemetry import overview_of, parse
from tests.conftest import TEST_ENV

pytestmark = pytest.mark.unit

TOKEN = TEST_ENV["PAXMART_ADMIN_TOKEN"]
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture
def client() -> Iterator[FlaskClient]:
    app = create_app()
    yield app.test_client()


def login_nonce(client: FlaskClient) -> str:
    page = client.get("/admin/ui/login")
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match, page.text
    return match.group(1)


def logged_in(client: FlaskClient, name: str = "ops") -> str:
    """Log in; the session's CSRF token, as every page's forms carry it."""
    answer = client.post(
        "/admin/ui/login", data={"csrf_token": login_nonce(client), "token": TOKEN, "name": name}
    )
    assert answer.status_code == 302, answer.text
    page = client.get("/admin/ui/audit")
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match
    return match.group(1)


def set_cookie_header(answer, name: str) -> str:
    return next(h for h in answer.headers.getlist("Set-Cookie") if h.startswith(f"{name}="))


def test_pages_without_a_session_lead_to_the_login_form(client):
    answer = client.get("/admin/ui/transactions?mode=2pc")
    assert answer.status_code == 302
    assert answer.headers["Location"] == "/admin/ui/login?next=/admin/ui/transactions?mode%3D2pc"


def test_the_session_cookie_is_http_only_same_site_and_scoped_to_the_dashboard(client):
    answer = client.post(
        "/admin/ui/login", data={"csrf_token": login_nonce(client), "token": TOKEN, "name": "ops"}
    )
    cookie = set_cookie_header(answer, "paxmart_ui")
    assert {"HttpOnly", "SameSite=Strict", "Path=/admin/ui"} <= set(cookie.split("; "))
    assert TOKEN not in cookie


def test_a_wrong_token_or_a_login_form_from_elsewhere_is_refused(client):
    wrong = client.post(
        "/admin/ui/login", data={"csrf_token": login_nonce(client), "token": "guess"}
    )
    assert wrong.status_code == 401 and "invalid_admin_token" in wrong.text
    assert not [h for h in wrong.headers.getlist("Set-Cookie") if h.startswith("paxmart_ui=")]
    forged = client.post("/admin/ui/login", data={"csrf_token": "forged", "token": TOKEN})
    assert forged.status_code == 403 and "csrf_refused" in forged.text


@pytest.mark.parametrize("supplied", [None, "", "forged"])
def test_a_state_change_without_the_sessions_csrf_token_is_refused(client, supplied):
    logged_in(client)
    form = {"level": "severe"} | ({"csrf_token": supplied} if supplied is not None else {})
    answer = client.post("/admin/ui/level", data=form)
    assert answer.status_code == 403
    assert "403 · csrf_refused" in answer.text


def test_a_state_change_without_a_session_is_refused(client):
    token = logged_in(client)
    client.delete_cookie("paxmart_ui", path="/admin/ui")
    answer = client.post("/admin/ui/level", data={"level": "severe", "csrf_token": token})
    assert answer.status_code == 401 and "session_required" in answer.text
    live = client.get("/admin/ui/api/overview")
    assert live.status_code == 401
    assert live.json == {
        "error": {"code": "session_required", "message": "Log in to the dashboard first."}
    }


def test_a_cookie_signed_for_another_admin_token_is_no_session():
    _, cookie = Sessions("another-token").issue("mallory")
    assert Sessions(TOKEN).read(cookie) is None
    assert Sessions(TOKEN).read(cookie + "x") is None
    session, mine = Sessions(TOKEN).issue("ops")
    assert Sessions(TOKEN).read(mine) == session


def test_names_from_data_are_escaped_in_pages(client):
    logged_in(client, name="<script>alert(1)</script>")
    page = client.get("/admin/ui/audit")
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]


METRICS = """
paxmart_transactions_total{mode="2pc",outcome="committed"} 7.0
paxmart_transactions_total{mode="saga",outcome="aborted"} 2.0
paxmart_http_request_seconds_bucket{component="gateway",route="/api/orders",le="0.05"} 3.0
paxmart_http_request_seconds_bucket{component="gateway",route="/api/orders",le="+Inf"} 9.0
paxmart_http_request_seconds_bucket{component="order",route="/orders",le="+Inf"} 99.0
paxmart_http_requests_total{component="gateway",route="/api/products",status="429"} 4.0
paxmart_http_requests_total{component="gateway",route="/api/products",status="200"} 40.0
paxmart_gateway_cache_total{outcome="hit"} 30.0
paxmart_gateway_breaker_state{upstream="order"} 2.0
paxmart_outbox_lag_seconds{component="order"} 1.5
paxmart_queue_messages{queue="t.inventory"} 3.0
paxmart_dead_letters{component="coupon"} 1.0
paxmart_gateway_ratelimit_total{rule="r1",decision="limited",source="redis"} 3.0
paxmart_gateway_ratelimit_total{rule="r1",decision="limited",source="lease"} 1.0
paxmart_gateway_ratelimit_total{rule="r1",decision="allowed",source="redis"} 9.0
paxmart_audit_ok 0.0
paxmart_audit_violations 2.0
paxmart_audit_finished_timestamp_seconds 1.7e9
"""


def test_the_overview_reads_the_components_metrics():
    seen = overview_of(parse(METRICS), 100.0, ["redpacket"])
    assert seen.transactions == {"2pc committed": 7.0, "saga aborted": 2.0}
    assert (seen.order_latency, seen.orders_timed) == ([(0.05, 3.0)], 9.0)
    assert seen.limited == 4.0
    assert seen.breakers["order"] == "open" and seen.breakers["inventory"] == "closed"
    assert (seen.outbox_lag_s, seen.queues, seen.dead_letters) == (
        {"order": 1.5},
        {"t.inventory": 3.0},
        {"coupon": 1.0},
    )
    assert seen.rules_limited == {"r1": 4.0}
    assert seen.audit is not None and (seen.audit.ok, seen.audit.violations) == (False, 2)
    assert seen.unreachable == ["redpacket"]
    assert overview_of([], 1.0, []).audit is None  # no audit since the coordinator started


def test_the_change_log_tells_states_in_words():
    assert state_in_words("switch", {"manual": True}) == "on (manual)"
    assert state_in_words("switch", {"manual": None}) == "follows the level"
    assert state_in_words("level", {"level": "severe"}) == "severe"
    rule = {"route": "/api/orders", "rate_per_s": 2.0, "burst": 2, "scope": "global"}
    assert state_in_words("ratelimit", rule) == "/api/orders · 2.0/s · burst 2 · global"
    assert state_in_words("ratelimit", None) == "none"


def test_the_audit_table_keeps_every_detail_of_a_violation():
    result = audit(
        {
            "ok": False,
            "violations": [{"check": "stock", "sku": "SKU-0001", "expected": 3}],
            "checked": {"orders": 5},
        }
    )
    assert (result.ok, result.checked) == (False, {"orders": 5})
    assert [(v.check, v.details) for v in result.violations] == [
        ("stock", [("sku", "SKU-0001"), ("expected", "3")])
    ]


def test_a_transaction_is_drawn_with_a_lane_per_branch_and_its_retries_numbered():
    at = "2026-01-01T00:00:0{}+00:00"
    detail = {
        "gtid": "gtx-<1>",
        "mode": "2pc",
        "status": "committed",
        "reason": None,
        "branches": [{"name": "inventory"}, {"name": "coupon"}],
        "recovery_attempts": 1,
        "created_at": at.format(0),
        "updated_at": at.format(5),
        "timeline": [
            {"branch": "inventory", "op": "prepare", "outcome": "ok", "at": at.format(1)},
            {"branch": "coupon", "op": "prepare", "outcome": "ok", "at": at.format(1)},
            {"branch": "coupon", "op": "commit", "outcome": "timeout", "at": at.format(2)},
            {"branch": "coupon", "op": "commit", "outcome": "ok", "at": at.format(4)},
            {"branch": "inventory", "op": "commit", "outcome": "ok", "at": at.format(4)},
        ],
    }
    root = ET.fromstring(transaction_svg(TxnRow.of(detail), detail))
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert {"coordinator", "inventory", "coupon"} <= set(texts)
    assert "2pc transaction gtx-<1>" in texts  # escaped in the SVG, read back as text
    assert {"commit timeout", "commit #2 ok", "begin (2pc)", "committed"} <= set(texts)
    assert "committed · taken over by recovery 1 time(s)" in texts
    arrows = [line for line in root.iter(f"{SVG}line") if line.get("marker-end")]
    assert len(arrows) == 5
    assert [a.get("stroke-dasharray") for a in arrows].count("5,3") == 1
