"""The Content Security Policy in Chromium: the main pages, the image revealed through htmx, the expert workspace,
Swagger UI and the admin all work under it with no violation reported; an inline script is refused (the check
works). Screenshots in var/test-artifacts/e2e/csp_*.png."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.annotation.factories import ImageAssetFactory, SampleFactory
from tests.experts.review_helpers import experts, split_items

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

# Runs before each page's own scripts: records every violation the browser reports (an init script comes from
# the test driver, not the page, so the policy does not apply to it).
WATCH = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) =>
  window.__csp.push(`${e.effectiveDirective} blocked ${e.blockedURI || "inline"} at ${e.sourceFile}:${e.lineNumber}`));
"""


class Watcher:
    """Console errors and warnings, uncaught page errors and CSP violation events of one browser page."""

    def __init__(self, page) -> None:
        self.page = page
        self.console: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.console.append(f"pageerror: {error}"))
        page.context.add_init_script(WATCH)

    def _console(self, message) -> None:
        if message.type in ("error", "warning"):
            self.console.append(f"{message.type}: {message.text}")

    def visit(self, url: str, ready: str = "main") -> None:
        self.page.goto(url)
        self.page.wait_for_selector(ready)
        self.page.wait_for_load_state("networkidle")

    def assert_clean(self, where: str) -> None:
        violations = self.page.evaluate("() => window.__csp || []")
        policy_messages = [m for m in self.console if "Content Security Policy" in m or "pageerror" in m]
        assert violations == [] and policy_messages == [], f"{where}: {violations} {policy_messages}"


def test_the_main_pages_run_under_the_policy_without_violations(open_as, live_server, admin_user, shots):
    admin_user.is_superuser = True
    admin_user.save()
    sample = SampleFactory(image=ImageAssetFactory())
    page = open_as(admin_user, next_url="/")
    watch = Watcher(page)
    base = live_server.url

    for name, url, ready in [
        ("dashboard", reverse("dashboard"), "main"),
        ("samples", reverse("sample_list"), "main"),
        ("jury", reverse("jury_run_list"), "main"),
        ("data", reverse("seed_sets"), "main"),
        ("training", reverse("training_runs"), "main"),
        ("evaluations", reverse("evaluation_list"), "main"),
        ("admin", reverse("admin:index"), "#content"),
        ("admin_samples", reverse("admin:annotation_sample_changelist"), "#changelist"),
    ]:
        watch.visit(f"{base}{url}", ready)
        watch.assert_clean(name)
        page.screenshot(path=shots / f"csp_{name}.png", full_page=True)

    # The sample page: the image is hidden until "Reveal image", which htmx swaps in.
    watch.visit(f"{base}{reverse('sample_detail', args=[sample.pk])}")
    assert page.locator("#image img").count() == 0
    page.click("#image a.button")
    page.wait_for_selector("#image img")
    page.wait_for_function("() => document.querySelector('#image img').complete")
    assert page.evaluate("() => document.querySelector('#image img').naturalWidth") == 16
    assert "?reveal=1" not in page.url  # swapped in place by htmx, not a page load
    watch.assert_clean("sample detail with the image revealed")
    page.screenshot(path=shots / "csp_sample_revealed.png", full_page=True)

    # Swagger UI: its bundle and start-up script load, fetch the schema and draw the operations.
    watch.visit(f"{base}{reverse('api_docs')}", ".opblock")
    assert page.locator(".opblock").count() > 10
    watch.assert_clean("/api/docs/")
    page.screenshot(path=shots / "csp_api_docs.png")

    # The check itself works: an inline script added to a page is refused and reported.
    watch.visit(f"{base}{reverse('dashboard')}")
    page.evaluate(
        """() => { const s = document.createElement("script"); s.textContent = "window.__ran = true";
                   document.body.appendChild(s); }"""
    )
    page.wait_for_function("() => window.__csp.length > 0")
    assert page.evaluate("() => window.__ran") is None
    assert "script-src-elem blocked inline" in page.evaluate("() => window.__csp[0]")


def test_the_expert_workspace_runs_under_the_policy_without_violations(open_as, live_server, shots):
    split_items(2, image=None)
    split_items(1, image=ImageAssetFactory())
    (erin,) = experts(1)
    page = open_as(erin)
    watch = Watcher(page)
    watch.visit(f"{live_server.url}/expert/")
    watch.assert_clean("expert home")
    page.click("#start-button")
    page.wait_for_selector("#workspace[data-slot]")
    page.wait_for_load_state("networkidle")
    # Walk the items to the one with an image, labelling through the page's script and htmx.
    for _ in range(3):
        if page.locator("#qta-img").count():
            break
        previous = page.get_attribute("#workspace", "data-slot")
        page.keyboard.press("0")
        page.keyboard.press("Enter")
        page.wait_for_function(
            "prev => { const w = document.querySelector('#workspace');"
            " return w && w.dataset.slot && w.dataset.slot != prev && !w.classList.contains('htmx-settling'); }",
            arg=previous,
        )
    assert page.locator("#qta-img").count() == 1
    page.keyboard.press("r")
    page.wait_for_function("() => document.querySelector('#qta-img').src.includes('?sample=')")
    page.wait_for_function("() => document.querySelector('#qta-img').complete")
    page.keyboard.press("?")
    page.wait_for_selector("#keys-help[open]")
    page.keyboard.press("?")
    watch.assert_clean("expert workspace")
    page.screenshot(path=shots / "csp_expert_workspace.png", full_page=True)


def test_a_locked_out_login_shows_the_lockout_page(browser, live_server, expert_user, shots, settings):
    context = browser.new_context(viewport={"width": 1000, "height": 600})
    page = context.new_page()
    watch = Watcher(page)
    for password in ["wrong"] * settings.AXES_FAILURE_LIMIT + ["pw-erin"]:
        page.goto(f"{live_server.url}/accounts/login/")
        page.fill("input[name=username]", "erin")
        page.fill("input[name=password]", password)
        with page.expect_navigation():
            page.keyboard.press("Enter")
    assert page.text_content("h1") == "Login locked"
    assert "refused for 15 minutes" in " ".join(page.text_content("#locked-out").split())
    watch.assert_clean("lockout page")
    page.screenshot(path=shots / "csp_locked_out.png")
    context.close()
