"""End-to-end tests in a real browser: Debian's Chromium (/usr/bin/chromium) driven by Playwright, headless,
against pytest-django's live server. Screenshots go to var/test-artifacts/e2e/ (GUARDTRACE_TEST_ARTIFACTS)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import REQUIRE_SERVICES

CHROMIUM = os.environ.get("GUARDTRACE_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(
    os.environ.get("GUARDTRACE_TEST_ARTIFACTS", Path(__file__).parents[2] / "var" / "test-artifacts")
)
# Playwright's sync API runs an event loop in this thread; the test's own ORM calls are still plain sync code.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        message = (
            f"needs Chromium at {CHROMIUM} (apt-get install chromium chromium-driver; `make test` does it)"
        )
        if REQUIRE_SERVICES:
            pytest.fail(f"{message} (GUARDTRACE_REQUIRE_SERVICES=1)")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def shots() -> Path:
    """Where this test's screenshots go."""
    folder = ARTIFACTS / "e2e"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def open_as(browser, live_server):
    """A fresh browser context logged in as a user (through the login form), returning its page."""
    contexts = []

    def login(user, password: str | None = None, next_url: str = "/expert/"):
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.goto(f"{live_server.url}/accounts/login/?next={next_url}")
        page.fill("input[name=username]", user.username)
        page.fill("input[name=password]", password or f"pw-{user.username}")
        page.keyboard.press("Enter")
        page.wait_for_url(f"{live_server.url}{next_url}")
        return page

    yield login
    for context in contexts:
        context.close()
