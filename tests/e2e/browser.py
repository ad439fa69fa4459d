"""Headless Debian chromium driven by Playwright, for the dashboard's tests.

Loopback only: every request the page makes to another host is aborted, and the test
that made it fails. Bounded: every Playwright wait has a deadline.
Every test leaves a screenshot of its page in `test-results/screenshots/<test>.png`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from paxkit.config import REPO_ROOT
from tests.conftest import TEST_ENV

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
SCREENSHOTS = REPO_ROOT / "test-results" / "screenshots"
WAIT_MS = 15_000
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
ADMIN_TOKEN = TEST_ENV["PAXMART_ADMIN_TOKEN"]


def require_chromium() -> None:
    """Skip where chromium could not be installed (not root); in CI it must be there."""
    if CHROMIUM.exists():
        return
    message = f"{CHROMIUM} is missing: `make test` installs Debian's chromium when run as root"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    require_chromium()
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=60_000
        )
        try:
            yield launched
        finally:
            launched.close()


class Outside:
    """Requests the page tried to send beyond loopback (each one aborted)."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    def guard(self, route: Route) -> None:
        url = route.request.url
        if urlsplit(url).hostname in LOOPBACK:
            route.continue_()
        else:
            self.urls.append(url)
            route.abort()


@pytest.fixture
def outside() -> Outside:
    return Outside()


@pytest.fixture
def page(
    browser: Browser, stack, outside: Outside, request: pytest.FixtureRequest
) -> Iterator[Page]:
    context = browser.new_context(
        base_url=stack.url("gateway"), viewport={"width": 1400, "height": 1000}
    )
    context.set_default_timeout(WAIT_MS)
    context.route(re.compile(r".*"), outside.guard)
    opened = context.new_page()
    try:
        yield opened
    finally:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        opened.screenshot(path=str(SCREENSHOTS / f"{request.node.name}.png"), full_page=True)
        context.close()
    assert outside.urls == [], "the page sent requests beyond loopback"


def log_in(page: Page, name: str = "ops") -> None:
    page.goto("/admin/ui/")
    expect(page).to_have_url(re.compile(r"/admin/ui/login"))
    page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    page.get_by_label("Your name").fill(name)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("h1")).to_have_text("Overview")


def csrf_token(page: Page) -> str:
    return page.locator("input[name=csrf_token]").first.input_value()
