"""The expert queue in Chromium: keyboard-only labelling, two experts never on one slot, an outsider refused, the
image blurred until revealed; screenshots of the key pages."""

from __future__ import annotations

import pytest

from annotation.models import AuditEvent, Label
from experts.models import ExpertSlot
from guardmodel.models import GuardCheckpoint
from tests.annotation.factories import ImageAssetFactory, LabelFactory
from tests.experts.review_helpers import experts, label_next, split_items

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def _start(page) -> None:
    """Enter on the queue page's start button, which has the focus (autofocus is applied once the page renders)."""
    page.wait_for_function("() => document.activeElement && document.activeElement.id === 'start-button'")
    page.keyboard.press("Enter")
    page.wait_for_selector("#workspace[data-slot]")
    page.wait_for_load_state("load")  # the page's scripts (htmx, the key handler) have run


def _slot_of(page) -> int:
    return int(page.get_attribute("#workspace", "data-slot"))


def _next_item(page, previous: int) -> int:
    """Wait until htmx has swapped in the workspace of another slot; its id."""
    page.wait_for_function(
        """prev => {
            const w = document.querySelector('#workspace');
            return w && w.dataset.slot && w.dataset.slot != prev && !w.classList.contains('htmx-settling');
        }""",
        arg=str(previous),
    )
    return _slot_of(page)


def test_an_expert_labels_three_items_with_the_keyboard_only(open_as, live_server, shots):
    items = split_items(3)
    (erin,) = experts(1)
    page = open_as(erin)
    page.screenshot(path=shots / "expert_home.png", full_page=True)
    # The start button has the focus: Enter claims the first item and opens it.
    _start(page)
    url_before = page.url
    slot = _slot_of(page)
    page.keyboard.press("?")
    page.wait_for_selector("#keys-help[open]")
    page.screenshot(path=shots / "expert_keys_help.png")
    page.keyboard.press("?")

    # Item 1: judge 1 (the analysis starts from the juror who said 1), mark step 2 with j j x, submit with Enter.
    page.keyboard.press("1")
    assert page.input_value("#analysis") == "juror-c thinks 1.0"
    page.keyboard.press("j")
    page.keyboard.press("j")
    page.keyboard.press("x")
    assert page.text_content("#marked-step") == "2"
    page.screenshot(path=shots / "expert_labelling.png", full_page=True)
    page.keyboard.press("Enter")
    slot = _next_item(page, slot)
    assert page.url != url_before  # the address follows the item, without a page load

    # Item 2: Enter without a judgment is caught in the page; then 5 (0.5), edit the analysis, Ctrl+Enter.
    page.keyboard.press("Enter")
    assert "Pick a judgment" in page.text_content("#hint")
    page.keyboard.press("5")
    page.keyboard.press("e")
    page.keyboard.press("End")
    page.keyboard.type(" Edited by the expert.")
    page.keyboard.press("Control+Enter")
    slot = _next_item(page, slot)

    # Item 3: 0 and Enter; then the queue is empty for this expert.
    page.keyboard.press("0")
    page.keyboard.press("Enter")
    page.wait_for_selector("#workspace.finished")
    assert "Nothing left in the queue for you" in page.text_content("#workspace")
    page.screenshot(path=shots / "expert_finished.png", full_page=True)

    labels = list(Label.objects.filter(source_kind="expert", source_name=erin.username).order_by("sample_id"))
    assert [label.sample_id for label in labels] == [item.sample_id for item in items]
    assert [label.judgment for label in labels] == [1.0, 0.5, 0.0]
    assert labels[0].meta["first_harmful_step"] == 2 and labels[0].meta["prefilled_from"] == "juror-c"
    assert labels[1].analysis == "juror-b thinks 0.5 Edited by the expert."
    assert labels[2].analysis == "juror-a thinks 0.0"
    assert AuditEvent.objects.filter(action="label_write", user=erin).count() == 3


def test_two_experts_in_two_browsers_never_receive_the_same_slot(open_as):
    split_items(3)
    a, b = experts(2)
    page_a, page_b = open_as(a), open_as(b)
    # Both ask for work at the same moment.
    page_a.evaluate("document.getElementById('start-button').form.submit()")
    page_b.evaluate("document.getElementById('start-button').form.submit()")
    for page in (page_a, page_b):
        page.wait_for_selector("#workspace[data-slot]")
        page.wait_for_load_state("load")
    seen_a, seen_b = [_slot_of(page_a)], [_slot_of(page_b)]
    assert seen_a[0] != seen_b[0]
    # Both label everything they are given, alternating keystrokes between the two browsers.
    for _ in range(2):
        for page, seen in ((page_a, seen_a), (page_b, seen_b)):
            page.keyboard.press("1")
            page.keyboard.press("Enter")
            seen.append(_next_item(page, seen[-1]))
    for page in (page_a, page_b):
        page.keyboard.press("1")
        page.keyboard.press("Enter")
        page.wait_for_selector("#workspace.finished")
    assert not set(seen_a) & set(seen_b)
    slots = ExpertSlot.objects.filter(status="submitted")
    assert slots.count() == 6
    assert {s.expert_id for s in slots if s.pk in seen_a} == {a.pk}
    assert {s.expert_id for s in slots if s.pk in seen_b} == {b.pk}
    # Each item got one label from each expert, never two from one.
    assert slots.values("item", "expert").distinct().count() == 6


def test_an_outsider_is_refused_and_a_stranger_is_sent_to_log_in(
    browser, open_as, live_server, outsider, shots
):
    (item,) = split_items(1)
    page = open_as(outsider, next_url="/")
    for path in ("/expert/", "/expert/agreement/", f"/samples/{item.sample_id}/", "/review/disagreements/"):
        response = page.goto(f"{live_server.url}{path}")
        assert response.status == 403, path
        assert item.sample.question not in page.content()
    page.screenshot(path=shots / "outsider_refused.png")
    response = page.request.post(f"{live_server.url}/expert/claim/")
    assert response.status in (403, 404)  # refused either way (CSRF or role), and nothing was claimed
    assert not ExpertSlot.objects.exclude(status="open").exists()
    stranger = browser.new_context().new_page()
    stranger.goto(f"{live_server.url}/expert/")
    assert "/accounts/login/" in stranger.url
    stranger.context.close()


def test_the_image_stays_blurred_until_the_expert_reveals_it(open_as, shots):
    image = ImageAssetFactory()
    (item,) = split_items(1, image=image)
    (erin,) = experts(1)
    page = open_as(erin)
    _start(page)
    img = page.locator("#qta-img")
    assert "/preview/" in img.get_attribute("src") and "blurred" in img.get_attribute("class")
    assert "blur(" in img.evaluate("el => getComputedStyle(el).filter")
    assert "Content warning" in page.text_content(".qta-image")
    page.keyboard.press("j")  # other keys leave it alone
    assert not AuditEvent.objects.filter(action="image_view").exists()
    page.screenshot(path=shots / "image_blurred.png")
    page.keyboard.press("r")
    page.wait_for_function("() => document.querySelector('#qta-img').src.includes('?sample=')")
    page.wait_for_function("() => document.querySelector('#qta-img').complete")
    assert "blurred" not in (img.get_attribute("class") or "")
    assert img.evaluate("el => getComputedStyle(el).filter") == "none"
    page.screenshot(path=shots / "image_revealed.png")
    views = AuditEvent.objects.filter(action="image_view", user=erin)
    assert views.count() == 1 and views.get().sample_id == item.sample_id


def test_screenshots_of_the_review_pages(open_as, live_server, reviewer_user, admin_user, shots):
    admin_user.is_superuser = True
    admin_user.save()
    adjudicate, decided = split_items(2)
    crowd = experts(3)
    for user, value in zip(crowd, (0.0, 0.5, 1.0), strict=True):
        label_next(user, value, f"{user.username} reads it as {value}")
    for user in crowd:
        label_next(user, 1.0, "Step 2 leaks the method.")
    GuardCheckpoint.objects.create(name="guard-1", path="/nowhere", is_active=True)
    LabelFactory(sample=decided.sample, source_kind="guard", source_name="guard-1", judgment=0.0,
                 analysis="The answer refuses; safe.")  # fmt: skip
    page = open_as(reviewer_user, next_url="/review/disagreements/")
    assert f"#{decided.sample_id}" in page.text_content("#results")
    page.screenshot(path=shots / "disagreements.png", full_page=True)
    # On a phone each row is a card: the guard's judgment, the label and the direction are on screen, not scrolled off.
    page.set_viewport_size({"width": 390, "height": 844})
    for column in ("Guard", "P(harmful)", "Label", "Direction"):
        box = page.locator(f'#results td[data-label="{column}"]').first.bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, (column, box)
    page.screenshot(path=shots / "disagreements_phone.png", full_page=True)
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.goto(f"{live_server.url}/review/disagreements/{decided.sample_id}/")
    page.screenshot(path=shots / "disagreement_detail.png", full_page=True)
    page.click("button[value=guard_wrong]")
    page.wait_for_selector("text=Guard is wrong (hard negative)")
    page.goto(f"{live_server.url}/expert/agreement/")
    page.screenshot(path=shots / "agreement.png", full_page=True)
    admin = open_as(admin_user, next_url="/expert/adjudication/")
    assert f"Item #{adjudicate.pk}" in admin.content()
    admin.screenshot(path=shots / "adjudication.png", full_page=True)
    admin.check(f"#item-{adjudicate.pk} input[name=judgment][value='0.5']")
    admin.click(f"#item-{adjudicate.pk} button[type=submit]")
    admin.wait_for_selector("text=decided: 0.5")
    adjudicate.refresh_from_db()
    assert (adjudicate.status, adjudicate.decision, adjudicate.adjudicator) == ("done", 0.5, admin_user)
