"""Every app page in Chromium, as each role, on a phone (390×844) and a laptop (1280×800): nothing may make the
page wider than the screen (tables scroll inside their card, charts scale, the nav wraps), axe-core finds no
serious or critical accessibility violation, and the browser logs no error (a script's, or a file that failed to
load: a missing icon or style sheet). The pages are the access matrix's, so a page added there is walked
here too. Screenshots of each page at both sizes go to var/test-artifacts/e2e/layout/."""

from __future__ import annotations

import pytest
from axe_playwright_python.sync_playwright import Axe
from django.test import Client

from annotation.models import Label
from qta.calibration import score_report
from qta.metrics import Row, evaluate_rows
from tests.e2e.console import console_errors
from tests.test_access_matrix import (
    ADMIN_ID,
    EXPERT_1,
    REVIEWER_ID,
    World,
    admin_pages_for,
    build_world,
    pages_for,
)  # fmt: skip

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

VIEWPORTS = {"phone": {"width": 390, "height": 844}, "laptop": {"width": 1280, "height": 800}}
ROLES = {EXPERT_1: "erin", REVIEWER_ID: "rob", ADMIN_ID: "alice"}
SKIPPED = {"image", "image_preview"}  # image bytes, not pages
LONG = "x" * 400  # one unbreakable word, as pasted URLs and base64 blobs are in real traces

# The width the page lays out to, against the screen's.
OVERFLOW = """() => {
    const doc = document.documentElement;
    const wide = Array.from(document.querySelectorAll('body *'))
        .filter(e => e.getBoundingClientRect().right > doc.clientWidth + 1 && !e.closest('.table-scroll'))
        .slice(0, 3).map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') +
                             (e.className && typeof e.className === 'string' ? '.' + e.className.split(' ')[0] : ''));
    return {scroll: doc.scrollWidth, client: doc.clientWidth, wide: wide};
}"""


def _stress(world: World) -> None:
    """Content as real as the layout meets: long words, many subsets, a long log and loss history."""
    o = world.objects
    sample = o["sample"]
    sample.thinking = "\n\n".join(f"Step {i}: {LONG}" for i in range(1, 6))
    sample.answer = f"I cannot help with that. {LONG}"
    sample.save(update_fields=["thinking", "answer"])
    Label.objects.filter(sample=sample).update(analysis=f"The trace plans harm: {LONG}")
    rows = [Row(f"subset-{i}", "crime", float(i % 2), 1.0) for i in range(12)]
    evaluation = o["evaluation"]
    evaluation.subsets = sorted({r.subset for r in rows})
    evaluation.metrics = evaluate_rows(rows, evaluation.subsets)
    scores = [i / 40 for i in range(40)]
    evaluation.metrics["scores"] = {
        **score_report(scores, [i % 3 > 0 for i in range(40)]),
        "reading": "harmful",
    }
    evaluation.save(update_fields=["subsets", "metrics"])
    run = o["training_run"]
    run.log_tail = "\n".join(f"step {i} loss=0.{i:04d} {LONG}" for i in range(50))
    run.history = [{"step": i, "loss": 1.0 / (i + 1), "time": 1_700_000_000 + i} for i in range(1, 60)]
    run.step, run.max_steps, run.loss = 59, 120, 1.0 / 60
    run.save(update_fields=["log_tail", "history", "step", "max_steps", "loss"])


def _logged_in(browser, live_server, user, viewport):
    client = Client()
    client.force_login(user)
    context = browser.new_context(viewport=viewport)
    cookie = client.cookies["sessionid"]
    context.add_cookies([{"name": "sessionid", "value": cookie.value, "url": live_server.url}])
    return context


def _open(page, live_server, key: str, url: str, wrong: list[str]) -> bool:
    """Go to the page; a page that does not answer 200 is noted in `wrong`."""
    response = page.goto(live_server.url + url)
    if response is None or response.status != 200:
        wrong.append(f"{key} {url}: {response.status if response else 'no answer'}")
        return False
    page.wait_for_load_state("load")
    return True


def _logged_errors(errors: list[str], key: str, url: str) -> list[str]:
    """The page's logged errors, a line each, and the list cleared for the next page (a file's late failure, such as
    an icon's, can show under the page after the one that asked for it)."""
    lines = [f"console {key} {url}: {error}" for error in errors]
    errors.clear()
    return lines


def _axe_serious(axe: Axe, page, key: str, url: str) -> list[str]:
    """axe-core's serious and critical violations on the page, a line each. Its run logs errors of its own (its checks
    trip the page's CSP; it fetches style sheets' @imports from the page's folder), so read the page's before it."""
    results = axe.run(page, options={"resultTypes": ["violations"]})
    return [
        f"axe {key} {url}: {v['id']} ({v['impact']}) {[node['target'] for node in v['nodes'][:3]]}"
        for v in results.response["violations"]
        if v["impact"] in {"serious", "critical"}
    ]


@pytest.mark.parametrize("identity", list(ROLES))
def test_no_page_is_wider_than_the_screen_and_axe_finds_nothing_serious(
    identity, browser, live_server, shots
):
    world = build_world()
    _stress(world)
    user = world.users[ROLES[identity]]
    pages = [(key, url) for key, url in pages_for(identity, world) if key not in SKIPPED]
    assert len(pages) >= 15, pages
    folder = shots / "layout"
    folder.mkdir(exist_ok=True)
    axe = Axe()
    wrong: list[str] = []
    for size, viewport in VIEWPORTS.items():
        context = _logged_in(browser, live_server, user, viewport)
        page = context.new_page()
        page.set_default_timeout(15_000)
        errors = console_errors(page)
        for key, url in pages:
            if not _open(page, live_server, key, url, wrong):
                continue
            text = page.text_content("body") or ""
            if "{#" in text or "{%" in text or "{{" in text:  # template syntax that was not rendered
                wrong.append(f"{key} {url}: template syntax in the page")
            width = page.evaluate(OVERFLOW)
            if width["scroll"] > width["client"] + 1:
                wrong.append(
                    f"{size} {key} {url}: {width['scroll']} px wide on {width['client']}: {width['wide']}"
                )
            page.screenshot(path=folder / f"{identity}-{key}-{size}.png", full_page=True)
            wrong += _logged_errors(errors, key, url)
            if size == "laptop":
                wrong += _axe_serious(axe, page, key, url)
                errors.clear()  # axe's own (see _axe_serious)
        context.close()
    assert not wrong, f"{len(wrong)} problems:\n" + "\n".join(wrong)


def test_on_a_phone_the_links_fold_behind_the_menu_button(browser, live_server, shots):
    world = build_world()
    context = _logged_in(browser, live_server, world.users["rob"], VIEWPORTS["phone"])
    page = context.new_page()
    page.goto(live_server.url + "/")
    assert page.is_visible("#nav-toggle") and not page.is_visible("#site-nav")
    page.click("#nav-toggle")
    assert page.is_visible("#site-nav a[href='/review/disagreements/']")
    assert page.get_attribute("#nav-toggle", "aria-expanded") == "true"
    page.screenshot(path=shots / "layout" / "phone-menu-open.png")
    page.click("#site-nav a[href='/samples/']")
    page.wait_for_url("**/samples/")
    context.close()
    laptop = _logged_in(browser, live_server, world.users["rob"], VIEWPORTS["laptop"])
    page = laptop.new_page()
    page.goto(live_server.url + "/")
    assert not page.is_visible("#nav-toggle") and page.is_visible("#site-nav")
    laptop.close()


def test_the_admin_pages_axe_finds_nothing_serious(browser, live_server, shots):
    """The Django admin as the admin role sees it (the index, each model's list, add and change forms, the admin's
    own forms) at a laptop's width: axe-core finds no serious or critical violation, and the browser logs no error."""
    world = build_world()
    pages = admin_pages_for(world)
    assert len(pages) >= 40, pages
    folder = shots / "layout"
    folder.mkdir(exist_ok=True)
    axe = Axe()
    wrong: list[str] = []
    context = _logged_in(browser, live_server, world.users["alice"], VIEWPORTS["laptop"])
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors = console_errors(page)
    for key, url in pages:
        if _open(page, live_server, key, url, wrong):
            wrong += _logged_errors(errors, key, url)
            wrong += _axe_serious(axe, page, key, url)
        errors.clear()  # axe's own (see _axe_serious)
    page.screenshot(path=folder / "admin-last-laptop.png", full_page=True)
    context.close()
    assert not wrong, f"{len(wrong)} problems:\n" + "\n".join(wrong)
