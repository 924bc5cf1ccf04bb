"""The expert queue, adjudication, agreement and disagreement pages and the expert API, through Django's client:
roles on every view and endpoint, htmx flows, blind labels, the audit log."""

from __future__ import annotations

import html
import io
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from PIL import Image

from annotation.models import AuditEvent, Label
from experts.models import ExpertQueueItem, ExpertSlot, ReviewDecision
from experts.services import expert_slot_claim
from guardmodel.models import GuardCheckpoint
from tests.annotation.factories import ImageAssetFactory, LabelFactory, SampleFactory
from tests.experts.review_helpers import experts, jury_votes, label_next, split_items

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}


def _pages(slot_id: int, sample_id: int) -> list[tuple[str, str]]:
    return [
        ("get", reverse("expert_home")),
        ("post", reverse("expert_claim")),
        ("get", reverse("expert_slot", args=[slot_id])),
        ("post", reverse("expert_submit", args=[slot_id])),
        ("post", reverse("expert_skip", args=[slot_id])),
        ("post", reverse("expert_renew", args=[slot_id])),
        ("get", reverse("adjudication")),
        ("get", reverse("agreement")),
        ("post", reverse("reliability_draw")),
        ("get", reverse("disagreement_list")),
        ("get", reverse("disagreement", args=[sample_id])),
    ]


def test_an_outsider_is_refused_everywhere_and_anonymous_users_are_sent_to_log_in(client, outsider, api_for):
    (item,) = split_items(1)
    slot = item.slots.first()
    for method, url in _pages(slot.pk, item.sample_id):
        assert getattr(client, method)(url).status_code == 302, url
    client.force_login(outsider)
    for method, url in _pages(slot.pk, item.sample_id):
        response = getattr(client, method)(url)
        assert response.status_code == 403, url
        assert item.sample.question not in response.content.decode()
    api = api_for(outsider)
    for url in (
        reverse("api_expert_claim"),
        reverse("api_expert_submit", args=[slot.pk]),
        reverse("api_expert_skip", args=[slot.pk]),
        reverse("api_expert_renew", args=[slot.pk]),
    ):
        assert api.post(url, {"token": "x"}, format="json").status_code == 403
        assert api_for(None).post(url, {"token": "x"}, format="json").status_code == 401
    assert not ExpertSlot.objects.exclude(status="open").exists()


def test_each_role_reaches_only_its_own_pages(client, reviewer_user, admin_user):
    (item,) = split_items(1)
    (erin,) = experts(1)
    slot = item.slots.first()
    client.force_login(reviewer_user)
    assert client.post(reverse("expert_claim")).status_code == 403  # reviewers do not label
    assert client.get(reverse("adjudication")).status_code == 403
    assert client.get(reverse("disagreement_list")).status_code == 200
    assert client.get(reverse("expert_home")).status_code == 200
    client.force_login(erin)
    assert client.get(reverse("disagreement_list")).status_code == 403
    assert client.get(reverse("disagreement", args=[item.sample_id])).status_code == 403
    assert client.get(reverse("adjudication")).status_code == 403
    assert client.post(reverse("reliability_draw")).status_code == 403
    assert client.get(reverse("agreement")).status_code == 200
    admin_user.is_superuser = True
    admin_user.save()
    client.force_login(admin_user)
    assert client.get(reverse("adjudication")).status_code == 200
    # Someone else's slot is not theirs to open.
    client.force_login(erin)
    other = experts(1, prefix="other")[0]
    claimed = expert_slot_claim(user=other)
    assert client.get(reverse("expert_slot", args=[claimed.pk])).status_code == 302
    # …nor to submit into: the claim stays the other expert's, and nothing is stored.
    response = client.post(reverse("expert_submit", args=[claimed.pk]),
                           {"token": claimed.claim_token, "judgment": "1", "analysis": "not mine"}, **HTMX)  # fmt: skip
    assert "Your claim on this item has ended" in response.content.decode()
    claimed.refresh_from_db()
    assert (claimed.status, claimed.expert) == ("claimed", other)
    assert not Label.objects.filter(source_kind="expert").exists()
    assert slot.status == "open"


def test_an_expert_labels_through_the_pages_without_a_page_load(client):
    items = split_items(2)
    (erin,) = experts(1)
    client.force_login(erin)
    home = client.get(reverse("expert_home"))
    assert b"Start labelling" in home.content
    response = client.post(reverse("expert_claim"))
    slot = ExpertSlot.objects.get(expert=erin, status="claimed")
    assert response.status_code == 302 and response["Location"] == reverse("expert_slot", args=[slot.pk])
    page = client.get(response["Location"]).content.decode()
    sample = items[0].sample
    assert sample.question in page
    assert "juror-a thinks 0" in page and "juror-c thinks 1" in page
    assert 'id="step-2"' in page

    bad = client.post(
        reverse("expert_submit", args=[slot.pk]),
        {"token": slot.claim_token, "judgment": "1", "analysis": ""},
        **HTMX,
    )
    assert bad.status_code == 200 and "analysis: write an analysis" in bad.content.decode()
    for field, value, error in (
        ("first_harmful_step", "²", "first_harmful_step: '²' is not a step number"),  # a Unicode digit
        ("judgment", "harmful", "judgment: pick 0, 0.5 or 1"),
        ("judgment", "2", "judgment: 2.0 is not one of 0, 0.5, 1"),
    ):
        form = {"token": slot.claim_token, "judgment": "1", "analysis": "Step 2.", field: value}
        refused = client.post(reverse("expert_submit", args=[slot.pk]), form)
        assert refused.status_code == 400 and error in html.unescape(refused.content.decode()), (field, value)
    assert not Label.objects.filter(source_kind="expert").exists()
    good = client.post(
        reverse("expert_submit", args=[slot.pk]),
        {"token": slot.claim_token, "judgment": "1", "analysis": "Step 2 is the harm.", "first_harmful_step": "2",
         "prefilled_from": "juror-c"},
        **HTMX,
    )  # fmt: skip
    body = good.content.decode()
    assert good.status_code == 200 and "Label saved." in body
    assert items[1].sample.question in body  # the next item came back in the same response
    nxt = ExpertSlot.objects.get(expert=erin, status="claimed")
    assert good["HX-Push-Url"] == reverse("expert_slot", args=[nxt.pk])
    label = Label.objects.get(source_kind="expert", source_name=erin.username)
    assert (label.judgment, label.meta["first_harmful_step"], label.meta["prefilled_from"]) == (
        1.0,
        2,
        "juror-c",
    )

    # The same form sent again (a retried request, another tab) is refused and stores nothing.
    again = client.post(
        reverse("expert_submit", args=[slot.pk]),
        {"token": slot.claim_token, "judgment": "0", "analysis": "again"},
        **HTMX,
    )
    assert "already submitted" in again.content.decode()
    assert Label.objects.filter(source_kind="expert").count() == 1

    skipped = client.post(reverse("expert_skip", args=[nxt.pk]), {"token": nxt.claim_token}, **HTMX)
    assert "Nothing left in the queue for you" in skipped.content.decode()
    assert skipped["HX-Push-Url"] == reverse("expert_home")


def test_the_labelling_page_shows_a_blurred_stand_in_until_the_image_is_revealed(client):
    image = ImageAssetFactory(data=_png(64, 48))
    (item,) = split_items(1, image=image)
    (erin,) = experts(1)
    client.force_login(erin)
    client.post(reverse("expert_claim"))
    slot = ExpertSlot.objects.get(expert=erin)
    page = client.get(reverse("expert_slot", args=[slot.pk])).content.decode()
    preview_url = reverse("image_preview", args=[image.sha256])
    assert f'src="{preview_url}"' in page and 'class="blurred"' in page and "Content warning" in page
    preview = client.get(preview_url)
    with Image.open(io.BytesIO(preview.content)) as small:
        assert max(small.size) <= 24
    assert not AuditEvent.objects.filter(action="image_view").exists()
    # Revealing fetches the real image, which the audit log records with the sample.
    full = client.get(reverse("image", args=[image.sha256]) + f"?sample={item.sample_id}")
    assert full.status_code == 200
    assert AuditEvent.objects.filter(action="image_view", user=erin, sample=item.sample).count() == 1


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_experts_are_blind_to_other_experts_on_pages_and_in_the_api(client, api_for):
    (item,) = split_items(1)
    e = experts(2)
    label_next(e[0], 1.0, "Expert zero's private view.")
    client.force_login(e[1])
    assert b"Expert zero" not in client.get(reverse("sample_detail", args=[item.sample_id])).content
    detail = api_for(e[1]).get(reverse("api_sample_detail", args=[item.sample_id])).json()
    assert {label["source_kind"] for label in detail["labels"]} == {"juror"}
    listed = api_for(e[1]).get(reverse("api_label_list"), {"sample": item.sample_id}).json()
    assert {label["source_name"] for label in listed["results"]} == {"juror-a", "juror-b", "juror-c"}
    # And the label API does not let an expert write around the queue.
    response = api_for(e[1]).post(
        reverse("api_label_list"),
        {"sample": item.sample_id, "source_kind": "expert", "judgment": 0, "analysis": "x"},
        format="json",
    )
    assert response.status_code == 403 and "expert queue" in response.json()["detail"]


def test_the_expert_api_claims_submits_skips_and_renews(api_for, settings):
    settings.GUARDTRACE_EXPERT_DAILY_CAP = 2
    split_items(2)
    (erin,) = experts(1)
    api = api_for(erin)
    claimed = api.post(reverse("api_expert_claim")).json()
    assert claimed["sample"]["steps"] == ["First I read the question.", "Then I decide how to answer."]
    assert [j["name"] for j in claimed["jurors"]] == ["juror-a", "juror-b", "juror-c"]
    submit = reverse("api_expert_submit", args=[claimed["slot"]])
    bad = api.post(
        submit, {"token": claimed["token"], "judgment": 1, "analysis": "x", "first_harmful_step": 9}
    )
    assert bad.status_code == 400 and "first_harmful_step" in bad.json()
    assert api.post(submit, {"token": claimed["token"], "judgment": 0.3, "analysis": "x"}).status_code == 400
    renewed = api.post(reverse("api_expert_renew", args=[claimed["slot"]]), {"token": claimed["token"]})
    assert renewed.status_code == 200 and renewed.json()["lease_expires_at"]
    ok = api.post(
        submit, {"token": claimed["token"], "judgment": 1, "analysis": "Harmful.", "first_harmful_step": 1}
    )
    assert ok.status_code == 201 and ok.json()["source_name"] == "expert0"
    assert (
        api.post(submit, {"token": claimed["token"], "judgment": 1, "analysis": "Harmful."}).status_code
        == 409
    )
    second = api.post(reverse("api_expert_claim")).json()
    assert api.post(reverse("api_expert_skip", args=[second["slot"]]), {"token": "wrong"}).status_code == 409
    assert (
        api.post(reverse("api_expert_skip", args=[second["slot"]]), {"token": second["token"]}).status_code
        == 204
    )
    capped = api.post(reverse("api_expert_claim"))
    assert capped.status_code == 429 and "2 items today" in capped.json()["detail"]


def test_an_expert_with_nothing_left_gets_204(api_for):
    (erin,) = experts(1)
    assert api_for(erin).post(reverse("api_expert_claim")).status_code == 204


def test_an_admin_adjudicates_a_split_of_experts(client, admin_user):
    (item,) = split_items(1)
    for user, value in zip(experts(3), (0.0, 0.5, 1.0), strict=True):
        label_next(user, value, f"says {value}")
    admin_user.is_superuser = True
    admin_user.save()
    client.force_login(admin_user)
    page = client.get(reverse("adjudication")).content.decode()
    assert f"Item #{item.pk}" in page and "says 0.5" in page
    bad = client.post(reverse("adjudication"), {"item": item.pk, "judgment": "2", "analysis": "x"})
    assert bad.status_code == 400 and "judgment" in bad.content.decode()
    client.post(
        reverse("adjudication"), {"item": item.pk, "judgment": "0.5", "analysis": "says 0.5", "note": "ok"}
    )
    item.refresh_from_db()
    assert (item.status, item.decision, item.adjudicator) == ("done", 0.5, admin_user)
    # The Django admin shows queue items (with their slots) and reviewer calls, read-only.
    assert client.get("/admin/experts/expertqueueitem/").status_code == 200
    detail = client.get(f"/admin/experts/expertqueueitem/{item.pk}/change/")
    assert detail.status_code == 200 and "expert2" in detail.content.decode()
    assert client.get("/admin/experts/reviewdecision/").status_code == 200


def test_the_agreement_page_and_a_reliability_draw(client, reviewer_user):
    samples = [SampleFactory() for _ in range(3)]
    for sample in samples:
        jury_votes(sample, (1.0, 1.0, 1.0))
    from annotation.strata import stratify

    stratify(sample_ids=[s.pk for s in samples])
    client.force_login(reviewer_user)
    response = client.post(reverse("reliability_draw"), {"n": "2", "seed": "3"})
    assert response["Location"] == reverse("agreement")
    assert "Sent 2 jury-labelled samples" in client.get(response["Location"]).content.decode()
    assert ExpertQueueItem.objects.filter(reason="reliability").count() == 2
    crowd = experts(3)
    for _ in range(2):
        for user in crowd:
            label_next(user, 1.0)
    page = client.get(reverse("agreement"), {"n": "150"}).content.decode()
    # As a percentage with one decimal, as every page shows scores.
    assert 'id="rel-accuracy">100.0%' in page and 'id="rel-f1">100.0%' in page
    # Fewer decided items than the draw asks for: all of them, said so (not "a random 150 of the 2").
    assert "on all 2 decided items that have a jury majority (fewer than the 150 asked for)" in page
    page = client.get(reverse("agreement"), {"n": "1", "seed": "5"}).content.decode()
    assert "on a random 1 of the 2 decided items that have a jury majority (seed 5)" in page


def _disagreement(final_votes, guard_judgment, **sample_fields):
    sample = SampleFactory(**sample_fields)
    jury_votes(sample, final_votes)
    from annotation.strata import stratify

    stratify(sample_ids=[sample.pk])
    LabelFactory(sample=sample, source_kind="guard", source_name="guard-1", judgment=guard_judgment,
                 analysis=f"guard says {guard_judgment}")  # fmt: skip
    return sample


def test_reviewers_filter_disagreements_and_triage_them(client, reviewer_user):
    GuardCheckpoint.objects.create(name="guard-1", path="/nowhere", is_active=True)
    missed = _disagreement((1.0, 1.0, 1.0), 0.0, subset="S-Eval-VL", category="crime")
    alarm = _disagreement((0.0, 0.0, 0.0), 1.0, subset="MM-Eval")
    severity = _disagreement((1.0, 1.0, 0.5), 0.5, subset="MM-Eval")
    agree = _disagreement((1.0, 1.0, 1.0), 1.0, subset="MM-Eval")
    client.force_login(reviewer_user)

    def listed(**params) -> set[int]:
        page = client.get(reverse("disagreement_list"), params, **HTMX)
        return {s.pk for s in (missed, alarm, severity, agree) if f">#{s.pk}<" in page.content.decode()}

    assert listed() == {missed.pk, alarm.pk, severity.pk}
    assert listed(direction="missed_harm") == {missed.pk}
    assert listed(direction="false_alarm") == {alarm.pk}
    assert listed(direction="severity") == {severity.pk}
    assert listed(subset="MM-Eval") == {alarm.pk, severity.pk}
    assert listed(subset="(none)") == set()  # every one has a subset
    assert listed(category="crime") == {missed.pk}
    assert listed(stratum="d2_1") == {severity.pk}

    detail = client.get(reverse("disagreement", args=[missed.pk])).content.decode()
    assert "guard says 0.0" in detail and "juror-a thinks 1.0" in detail
    client.post(reverse("disagreement", args=[missed.pk]), {"verdict": "guard_wrong", "note": "clear leak"})
    client.post(reverse("disagreement", args=[alarm.pk]), {"verdict": "label_wrong"})
    bad = client.post(reverse("disagreement", args=[severity.pk]), {"verdict": "nonsense"})
    assert bad.status_code == 400 and "verdict" in bad.content.decode()
    decisions = {d.sample_id: d for d in ReviewDecision.objects.all()}
    assert decisions[missed.pk].verdict == "guard_wrong" and decisions[missed.pk].reviewer == reviewer_user
    assert decisions[missed.pk].guard_label.judgment == 0.0
    assert ExpertQueueItem.objects.get(sample=alarm).reason == "reviewer"
    assert not ExpertQueueItem.objects.filter(sample=missed).exists()
    assert listed() == {severity.pk}
    assert listed(triage="triaged") == {missed.pk, alarm.pk}


def test_without_an_active_guard_the_inspector_says_what_to_do(client, reviewer_user):
    client.force_login(reviewer_user)
    assert b"No active guard checkpoint" in client.get(reverse("disagreement_list")).content


def test_the_demo_gives_the_demo_expert_a_queue_to_label(settings):
    from django.contrib.auth.models import Group
    from django.core.management import call_command

    for role in ("admin", "expert", "reviewer"):
        Group.objects.get_or_create(name=role)
    call_command("demo_setup", count=40)
    call_command("demo_setup", count=40)  # safe to run twice
    assert ExpertQueueItem.objects.filter(reason="reviewer").count() == 12
    from django.contrib.auth.models import User

    demo_expert = User.objects.get(username="expert")
    assert label_next(demo_expert, 0.5).source_name == "expert"


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({}, "Say how many samples to send"),
        ({"n": ""}, "Say how many samples to send"),
        ({"n": "²"}, "must be a whole number"),
        ({"n": "0"}, "at least 1"),
        ({"n": "10001"}, "at most 10,000"),
    ],
)
def test_a_reliability_draw_without_a_readable_count_sends_nothing_and_says_why(
    client, reviewer_user, body, says
):
    """An empty post (a replayed form, a stray request) used to send 150 samples to the experts' queue."""
    samples = [SampleFactory() for _ in range(3)]
    for sample in samples:
        jury_votes(sample, (1.0, 1.0, 1.0))
    from annotation.strata import stratify

    stratify(sample_ids=[s.pk for s in samples])
    client.force_login(reviewer_user)
    response = client.post(reverse("reliability_draw"), body)
    assert response["Location"] == reverse("agreement")
    assert says in client.get(response["Location"]).content.decode()
    assert not ExpertQueueItem.objects.filter(reason="reliability").exists()


def test_the_triage_loop_opens_the_next_disagreement_under_the_filters_and_undoes_the_last_call(
    client, reviewer_user
):
    GuardCheckpoint.objects.create(name="guard-1", path="/nowhere", is_active=True)
    first = _disagreement((1.0, 1.0, 1.0), 0.0, subset="MM-Eval")
    other = _disagreement((1.0, 1.0, 1.0), 0.0, subset="S-Eval-VL")  # filtered out below
    second = _disagreement((0.0, 0.0, 0.0), 1.0, subset="MM-Eval")
    third = _disagreement((1.0, 1.0, 0.5), 0.5, subset="MM-Eval")
    client.force_login(reviewer_user)
    query = "subset=MM-Eval&triage=untriaged&guard=guard-1"
    page = client.get(f"{reverse('disagreement', args=[first.pk])}?{query}").content.decode()
    assert "1 of 3 under these filters" in page
    assert f'href="{reverse("disagreement_list")}?{html.escape(query)}"' in page  # back, filters kept
    assert f'href="{reverse("disagreement", args=[second.pk])}?{html.escape(query)}" id="next-link"' in page

    # A call goes on to the next disagreement under the same filters (the S-Eval-VL one is skipped).
    done = client.post(f"{reverse('disagreement', args=[first.pk])}?{query}", {"verdict": "guard_wrong"})
    assert done["Location"] == f"{reverse('disagreement', args=[second.pk])}?{query}"
    page = client.get(done["Location"]).content.decode()
    assert f"Recorded on sample #{first.pk}: Guard is wrong" in page and "Your last call" in page

    # "Label is wrong" sends the sample to the experts; undoing it takes it out of their queue again.
    client.post(f"{reverse('disagreement', args=[second.pk])}?{query}", {"verdict": "label_wrong"})
    assert ExpertQueueItem.objects.filter(sample=second).exists()
    call = ReviewDecision.objects.get(sample=second)
    undone = client.post(reverse("disagreement_undo", args=[call.pk]), {"query": query})
    assert undone["Location"] == f"{reverse('disagreement', args=[second.pk])}?{query}"
    assert not ReviewDecision.objects.filter(sample=second).exists()
    assert not ExpertQueueItem.objects.filter(sample=second).exists()
    assert AuditEvent.objects.filter(action="review", detail__undo=call.pk, user=reviewer_user).exists()
    # Only the last call can be undone: with a newer one made, the earlier one stays.
    client.post(f"{reverse('disagreement', args=[second.pk])}?{query}", {"verdict": "guard_wrong"})
    earlier = ReviewDecision.objects.get(sample=first)
    refused = client.post(reverse("disagreement_undo", args=[earlier.pk]), {"query": query}, follow=True)
    assert "Only your last call can be undone." in refused.content.decode()
    assert ReviewDecision.objects.filter(sample=first).exists()

    # A new round for a decided item is closed again on undo, unless an expert has started on it.
    client.post(f"{reverse('disagreement', args=[second.pk])}?{query}", {"verdict": "unclear"})
    crowd = experts(3)
    for user in crowd:
        label_next(user, 0.0)
    item = ExpertQueueItem.objects.get(sample=second)
    assert (item.status, item.round) == ("done", 1)
    ReviewDecision.objects.filter(sample=second).update(at=timezone.now() - timedelta(seconds=1))
    client.post(
        f"{reverse('disagreement', args=[second.pk])}?triage=all&guard=guard-1", {"verdict": "label_wrong"}
    )
    item.refresh_from_db()
    assert (item.status, item.round, item.slots.filter(round=2).count()) == ("open", 2, 3)
    call = ReviewDecision.objects.filter(sample=second).order_by("-at", "-id").first()
    client.post(reverse("disagreement_undo", args=[call.pk]), {"query": query})
    item.refresh_from_db()
    assert (item.status, item.round, item.slots.filter(round=2).count()) == ("done", 1, 0)
    client.post(
        f"{reverse('disagreement', args=[second.pk])}?triage=all&guard=guard-1", {"verdict": "label_wrong"}
    )
    call = ReviewDecision.objects.filter(sample=second).order_by("-at", "-id").first()
    expert_slot_claim(user=crowd[0])
    kept = client.post(reverse("disagreement_undo", args=[call.pk]), {"query": query}, follow=True)
    assert "An expert has already started" in kept.content.decode()
    assert ReviewDecision.objects.filter(pk=call.pk).exists()

    # The last disagreement under the filters sends the reviewer back to the list with the filters.
    last = client.post(f"{reverse('disagreement', args=[third.pk])}?{query}", {"verdict": "guard_wrong"})
    assert last["Location"] == f"{reverse('disagreement_list')}?{query}"
    assert other.pk not in ReviewDecision.objects.values_list("sample_id", flat=True)
