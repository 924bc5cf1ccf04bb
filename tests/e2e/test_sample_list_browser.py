"""The sample list in Chromium, on a phone (390×844) and a laptop (1280×800): search with Enter, a sort, the page
jump (past the last page it shows the last), the dashboard's "(none)" subset link, no part of the page wider
than the screen, and no error in the browser's console (a search with Enter once sent two requests, the second
cancelling the first). Screenshots in var/test-artifacts/e2e/sample_list_*.png."""

from __future__ import annotations

import re

import pytest

from tests.annotation.factories import SampleFactory
from tests.e2e.console import console_errors

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

VIEWPORTS = {"phone": {"width": 390, "height": 844}, "laptop": {"width": 1280, "height": 800}}
OVERFLOW = "() => document.documentElement.scrollWidth <= window.innerWidth"


def _count(page) -> str:
    return page.locator("#results .count").inner_text()


def _wait_for_count(page, text: str) -> None:
    page.wait_for_function(
        "(text) => (document.querySelector('#results .count') || {}).textContent.includes(text)", arg=text
    )


def test_search_sort_and_page_jump_at_both_sizes(open_as, live_server, reviewer_user, shots):
    kneaded = SampleFactory.create_batch(70, answer="Knead the dough and let it rise.", subset="bakery")
    SampleFactory.create_batch(5, answer="Sharpen the knife first.", subset="")
    page = open_as(reviewer_user, next_url="/samples/")
    errors = console_errors(page)
    for name, viewport in VIEWPORTS.items():
        page.set_viewport_size(viewport)
        page.goto(f"{live_server.url}/samples/")
        _wait_for_count(page, "75 samples")

        page.fill("#sample-q", 'knead "the dough"')
        page.press("#sample-q", "Enter")
        _wait_for_count(page, "70 samples match")
        assert "q=knead" in page.url

        page.select_option("select[name=sort]", "newest")
        page.wait_for_url(re.compile(r"sort=newest"))
        first = page.locator("#results tbody tr td a").first
        assert first.inner_text() == str(kneaded[-1].pk)

        page.fill(".page-jump input[name=page]", "99")
        page.locator(".page-jump button").click()
        page.wait_for_selector("text=There is no such page")
        assert "Page 2 of 2" in page.locator(".pager").inner_text()
        assert "70 samples match" in _count(page)
        assert page.locator("#sample-q").input_value() == 'knead "the dough"'
        assert page.evaluate(OVERFLOW), f"{name}: the page is wider than the screen"
        page.screenshot(path=str(shots / f"sample_list_{name}.png"), full_page=True)

        # Previous from the bottom of the page: the new page starts at its top, swapped in once (no nesting).
        page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
        page.get_by_role("link", name="← Previous").click()
        page.wait_for_function("() => document.querySelector('.pager').textContent.includes('Page 1 of 2')")
        assert page.evaluate("document.querySelectorAll('#results').length") == 1
        page.wait_for_function("() => window.scrollY === 0")

        page.fill("#sample-q", '"unclosed AND (')
        page.press("#sample-q", "Enter")
        _wait_for_count(page, "0 samples match")
        assert page.evaluate(OVERFLOW), f"{name}: the page is wider than the screen"

    page.goto(f"{live_server.url}/")
    page.get_by_role("link", name="(none)").click()
    page.wait_for_url(re.compile(r"subset=%28none%29"))
    assert _count(page).startswith("5 samples")
    page.screenshot(path=str(shots / "sample_list_no_subset.png"), full_page=True)
    assert not errors, errors
