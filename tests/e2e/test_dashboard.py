"""The operator's dashboard in a real browser (headless chromium) against the real stack:
each test acts through the page and checks the outcome in the shop and the JSON API."""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from playwright.sync_api import Page, expect
from sqlalchemy import text

from paxkit.messaging import PLACED, branch_key
from tests.e2e.browser import (
    SCREENSHOTS,
    Outside,
    browser,
    csrf_token,
    log_in,
    outside,
    page,
)
from tests.e2e.conftest import ADMIN, publish_raw
from tests.helpers import wait_until

__all__ = ["browser", "outside", "page"]  # the fixtures this module uses

pytestmark = pytest.mark.timeout(180)

SWITCH_NAMES = ("recommendations", "read_only", "waiting_room", "order_async", "crawler_block")


@pytest.fixture
def control_restored(api) -> Iterator[None]:
    """Whatever a test does to the control plane, the next one finds it as it was."""
    yield
    api.http.put(api.base_url + "/admin/level", json={"level": "normal"}, headers=ADMIN)
    for name in SWITCH_NAMES:
        api.http.delete(api.base_url + f"/admin/switches/{name}", headers=ADMIN)
    for rule in api.get("/admin/ratelimits", headers=ADMIN).json()["items"]:
        if rule["rule"].startswith("ui-"):
            api.http.delete(api.base_url + f"/admin/ratelimits/{rule['rule']}", headers=ADMIN)


def order_body(user: int, sku: str = "SKU-0061") -> dict[str, Any]:
    return {
        "user_id": user,
        "items": [{"sku": sku, "qty": 1}],
        "coupon_id": f"C-{user}-1",
        "red_packet_cents": 100,
        "mode": "2pc",
    }


def answer_when(send: Callable[[], requests.Response], status: int, what: str) -> requests.Response:
    """Send until the answer has `status` (every gateway process follows a change within a
    second); the answer that had it."""

    def answered() -> tuple[requests.Response] | None:
        answer = send()  # in a tuple: a Response with an error status is falsy
        return (answer,) if answer.status_code == status else None

    return wait_until(answered, 5, what=what)[0]


def switch_row(page: Page, name: str):
    return page.locator(f'tr[data-switch="{name}"]')


def test_logging_in_opens_the_overview_with_live_charts_from_loopback_only(
    page: Page, outside: Outside, api, user
):
    log_in(page)
    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["paxmart_ui"]
    assert (session["httpOnly"], session["sameSite"], session["path"]) == (
        True,
        "Strict",
        "/admin/ui",
    )
    assert api.order(order_body(user)).status_code == 201
    expect(page.locator("#breakers li")).to_have_count(5)
    expect(page.locator('#breakers li[data-upstream="order"]')).to_have_text("order: closed")
    expect(page.locator("#updated")).to_contain_text("last reading")
    # Rates need two readings: the orders chart draws a line per mode and outcome.
    expect(page.locator("#chart-orders polyline").first).to_be_attached()
    expect(page.locator("#chart-queues polyline")).to_have_count(2)
    assert outside.urls == []


def test_read_only_turns_orders_away_until_it_is_turned_off(
    page: Page, api, user, another_user, control_restored
):
    log_in(page, name="<b>eve</b>")
    page.get_by_role("link", name="Degradation").click()
    row = switch_row(page, "read_only")
    row.get_by_role("button", name="On", exact=True).click()
    expect(row.locator("td.state")).to_have_text("on")
    expect(row.locator("td.source")).to_contain_text("set by <b>eve</b>")
    refused = answer_when(lambda: api.order(order_body(user)), 503, "orders answered 503")
    assert refused.json()["error"]["code"] == "read_only"

    row.get_by_role("button", name="Off", exact=True).click()
    expect(row.locator("td.state")).to_have_text("off")
    answer_when(lambda: api.order(order_body(another_user)), 201, "orders placed again")
    row.get_by_role("button", name="Follow level").click()
    expect(row.locator("td.source")).to_have_text("level normal")

    latest = page.locator("#changes tbody tr")
    expect(latest.first.locator("td.actor")).to_have_text("<b>eve</b>")  # shown, not markup
    assert page.locator("#changes b").count() == 0
    texts = [latest.nth(i).inner_text() for i in range(3)]
    assert "on (manual)\toff (manual)" in texts[1] and "off (manual)\tfollows the level" in texts[0]
    changes = api.get("/admin/changes?limit=3", headers=ADMIN).json()["items"]
    assert [(c["actor"], c["target"]) for c in changes] == [("<b>eve</b>", "read_only")] * 3


def test_level_severe_turns_every_switch_on_and_normal_turns_them_off(
    page: Page, api, control_restored
):
    log_in(page)
    page.get_by_role("link", name="Degradation").click()
    page.locator("#level-choice").select_option("severe")
    page.get_by_role("button", name="Set level").click()
    expect(page.locator("#level")).to_have_text("severe")
    for name in SWITCH_NAMES:
        expect(switch_row(page, name).locator("td.state")).to_have_text("on")
        expect(switch_row(page, name).locator("td.source")).to_have_text("level severe")
    served = api.get("/admin/switches", headers=ADMIN).json()
    assert served["level"] == "severe"
    assert all(s["on"] for s in served["switches"].values()), served
    page.screenshot(path=screenshot_of("level_severe"), full_page=True)

    page.locator("#level-choice").select_option("normal")
    page.get_by_role("button", name="Set level").click()
    expect(page.locator("#level")).to_have_text("normal")
    for name in SWITCH_NAMES:
        expect(switch_row(page, name).locator("td.state")).to_have_text("off")


def screenshot_of(moment: str) -> str:
    """A screenshot of a moment within a test, beside the one each test ends with."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return str(SCREENSHOTS / f"{moment}.png")


def test_a_two_per_second_rule_counts_its_429s_then_is_edited_and_deleted(
    page: Page, api, control_restored
):
    name = f"ui-two-{secrets.token_hex(3)}"
    log_in(page)
    page.get_by_role("link", name="Rate limits").click()
    form = page.locator("#rule-form")
    form.get_by_label("Name").fill(name)
    form.get_by_label("Route").fill("/api/recommendations")
    form.get_by_label("Requests per second").fill("2")
    form.get_by_label("Burst").fill("2")
    form.get_by_label("Scope").select_option("global")
    form.get_by_role("button", name="Add").click()
    row = page.locator(f'tr[data-rule="{name}"]')
    expect(row).to_contain_text("/api/recommendations")
    rules = {r["rule"]: r for r in api.get("/admin/ratelimits", headers=ADMIN).json()["items"]}
    assert (rules[name]["rate_per_s"], rules[name]["burst"]) == (2.0, 2)

    statuses: list[int] = []

    def limited() -> bool:
        statuses.extend(api.get("/api/recommendations").status_code for _ in range(6))
        return 429 in statuses

    wait_until(limited, timeout_s=10, what="429s from the 2/s rule")
    refused = statuses.count(429)
    expect(row.locator("td.limited")).to_have_text(str(refused))  # live, by the page's script
    page.screenshot(path=screenshot_of("rule_429s"), full_page=True)

    row.get_by_role("link", name="edit").click()
    page.locator("#rule-form").get_by_label("Requests per second").fill("50")
    page.locator("#rule-form").get_by_role("button", name="Save").click()
    expect(row.locator("td").nth(2)).to_have_text("50.0")
    row.get_by_role("button", name="Delete").click()
    expect(row).to_have_count(0)
    assert name not in {
        r["rule"] for r in api.get("/admin/ratelimits", headers=ADMIN).json()["items"]
    }


def test_an_orders_transaction_is_drawn_with_its_branches(page: Page, api, user):
    response = api.order(order_body(user, "SKU-0062"))
    assert response.status_code == 201, response.text
    gtid = response.json()["gtid"]
    log_in(page)
    page.get_by_role("link", name="Transactions").click()
    page.locator("#filter select[name=mode]").select_option("2pc")
    page.locator("#filter select[name=status]").select_option("committed")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#transactions tbody tr").first).to_have_attribute("data-mode", "2pc")
    modes = set(
        page.locator("#transactions tbody tr").evaluate_all("rows => rows.map(r => r.dataset.mode)")
    )
    assert modes == {"2pc"}
    page.get_by_role("link", name=gtid).click()
    expect(page.locator("#txn-status")).to_have_text("committed")
    expect(page.locator("#txn-branches")).to_have_text(
        re.compile("inventory.*coupon|coupon.*inventory")
    )
    labels = page.locator("#diagram svg text").all_text_contents()
    for lane in ("coordinator", "inventory", "coupon", "redpacket"):
        assert lane in labels, labels
    assert labels.count("prepare ok") == 3 and labels.count("commit ok") == 3, labels
    assert "committed" in labels and "begin (2pc)" in labels
    arrows = page.locator("#diagram svg line[marker-end]")
    expect(arrows).to_have_count(6)


def test_a_dead_letter_is_listed_with_its_reason_and_replayed(page: Page, api, dbs, settings):
    message_id = str(uuid.uuid4())
    publish_raw(settings, branch_key(PLACED, "coupon"), b"{not json <script>", message_id)

    def dead_ids() -> set[str]:
        items = api.get("/admin/dead-letters", headers=ADMIN).json()["items"]
        return {i["id"] for i in items if i["message_id"] == message_id}

    first = wait_until(dead_ids, what="the poison message dead-lettered")
    log_in(page)
    page.get_by_role("link", name="Dead letters").click()
    row = page.locator(f'tr[data-message-id="{message_id}"]')
    expect(row.locator("td.reason")).to_contain_text("not JSON")
    expect(row.locator("code.body")).to_have_text("{not json <script>")
    row.get_by_role("button", name="Replay").click()
    expect(page.locator("#replay-result")).to_contain_text("Replayed 1 message(s)")

    # Still poison: it dies again in the same consumer, a new row under the same message id.
    def dead_again() -> set[str] | None:
        ids = dead_ids()
        return ids if ids and ids != first else None

    again = wait_until(dead_again, what="dead again")
    page.reload()
    expect(row).to_have_attribute("data-id", next(iter(again)))
    page.get_by_role("button", name="Replay all").click()
    expect(page.locator("#replay-result")).to_contain_text(re.compile(r"Replayed [1-9]\d* message"))
    wait_until(lambda: (ids := dead_ids()) and ids != again, what="dead once more")
    with dbs["coupon"].transaction() as conn:  # leave nothing for the quiescence checks
        conn.execute(text("DELETE FROM dead_letters WHERE message_id = :m"), {"m": message_id})


def test_the_audit_runs_from_the_page_and_shows_its_verdict(page: Page, api):
    log_in(page)
    page.get_by_role("link", name="Audit").click()
    page.get_by_role("button", name="Run the audit").click()
    expect(page.locator("#verdict")).to_be_visible(timeout=90_000)
    expect(page.locator("#checked")).to_contain_text("orders")
    page.get_by_role("link", name="Overview").click()
    expect(page.locator("#audit")).to_have_text(re.compile(r"consistent|violation"))


def test_forged_or_missing_csrf_tokens_and_missing_sessions_are_refused(page: Page, api):
    log_in(page)
    token = csrf_token(page)
    forms: list[dict[str, str | float | bool]] = [
        {"level": "severe"},
        {"level": "severe", "csrf_token": "forged"},
    ]
    for form in forms:
        answer = page.request.post("/admin/ui/level", form=form)
        assert answer.status == 403 and "csrf_refused" in answer.text(), answer.text()
    with_header = page.request.post(
        "/admin/ui/level",
        form={"level": "normal"},
        headers={"X-CSRF-Token": token},
        max_redirects=0,
    )
    assert with_header.status == 302  # the session's own token passes

    browser = page.context.browser
    assert browser is not None
    anonymous = browser.new_context(base_url=page.url.split("/admin")[0])
    try:
        refused = anonymous.request.post(
            "/admin/ui/level", form={"level": "severe", "csrf_token": token}
        )
        assert refused.status == 401 and "session_required" in refused.text()
        live = anonymous.request.get("/admin/ui/api/overview")
        assert live.status == 401
        assert live.json()["error"]["code"] == "session_required"
    finally:
        anonymous.close()
    assert api.get("/admin/switches", headers=ADMIN).json()["level"] == "normal"

    # The page's own form with its token forged: the browser shows the refusal.
    page.get_by_role("link", name="Degradation").click()
    page.locator("#level-form input[name=csrf_token]").evaluate("input => input.value = 'forged'")
    page.locator("#level-choice").select_option("severe")
    page.get_by_role("button", name="Set level").click()
    expect(page.locator("section.error h1")).to_have_text("403 · csrf_refused")
    page.screenshot(path=screenshot_of("csrf_forged"), full_page=True)
    assert api.get("/admin/switches", headers=ADMIN).json()["level"] == "normal"

    page.goto("/admin/ui/")
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/admin/ui/login"))
    page.goto("/admin/ui/degradation")
    expect(page).to_have_url(re.compile(r"/admin/ui/login\?next=/admin/ui/degradation"))


def test_the_transaction_list_filters_by_mode_and_age(api, user):
    response = api.order({**order_body(user, "SKU-0063"), "mode": "tcc"})
    assert response.status_code == 201, response.text
    gtid = response.json()["gtid"]

    def listed(query: str) -> list[dict[str, Any]]:
        answer = api.get(f"/admin/transactions?{query}", headers=ADMIN)
        assert answer.status_code == 200, answer.text
        return list(answer.json()["items"])

    tcc = listed("mode=tcc&limit=500")
    assert gtid in {t["gtid"] for t in tcc} and {t["mode"] for t in tcc} == {"tcc"}
    assert gtid in {t["gtid"] for t in listed("mode=tcc&max_age_s=3600")}
    assert gtid not in {t["gtid"] for t in listed("mode=tcc&min_age_s=3600")}
    assert gtid not in {t["gtid"] for t in listed("mode=saga")}
    for query, field in (
        ("mode=4pc", "mode"),
        ("min_age_s=soon", "min_age_s"),
        ("max_age_s=-1", "max_age_s"),
    ):
        answer = api.get(f"/admin/transactions?{query}", headers=ADMIN)
        assert (answer.status_code, answer.json()["error"]["field"]) == (400, field)
