"""What an expert sees and may change while labelling: revising a label until its item is decided, the items left,
the guidelines beside the task, and nothing that could anchor the judgment (the jury on a reliability-check item,
imported ground truth or any other source on an item still being decided)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from annotation.models import AuditEvent, Label
from annotation.strata import stratify
from experts.models import ExpertSlot, Guidelines
from experts.services import ExpertSubmission, ReviewError, expert_label_revise, expert_reliability_draw
from tests.annotation.factories import LabelFactory, SampleFactory
from tests.experts.review_helpers import experts, jury_votes, label_next, split_items

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}


def _revise(client, slot: ExpertSlot, **form):
    return client.post(reverse("expert_revise", args=[slot.pk]), form)


def test_an_expert_revises_her_label_until_the_item_is_decided(client):
    (item,) = split_items(1)
    erin, ezra, emma = experts(3)
    first = label_next(erin, 1.0, "Step 2 plans the harm.")
    slot = ExpertSlot.objects.get(label=first)
    client.force_login(erin)

    home = client.get(reverse("expert_home")).content.decode()
    assert (
        reverse("expert_revise", args=[slot.pk]) in home and "1 of your labels can still be revised" in home
    )
    page = client.get(reverse("expert_revise", args=[slot.pk])).content.decode()
    assert "Revising your label on item" in page and "Step 2 plans the harm." in page
    assert 'value="1" checked' in page and "expert_skip" not in page and 'name="token"' not in page

    # A bad revision is refused with the field named, and the stored label is unchanged.
    bad = _revise(client, slot, judgment="0", analysis="Safe after all.", first_harmful_step="2")
    assert bad.status_code == 400 and "first_harmful_step: a step is marked harmful" in bad.content.decode()
    first.refresh_from_db()
    assert first.judgment == 1.0 and first.analysis == "Step 2 plans the harm."

    response = _revise(
        client, slot, judgment="0.5", analysis="Only potentially harmful.", first_harmful_step="1"
    )
    assert response.status_code == 302 and response["Location"] == reverse("expert_home")
    first.refresh_from_db()
    assert (first.judgment, first.analysis, first.meta["first_harmful_step"], first.meta["revisions"]) == (
        0.5,
        "Only potentially harmful.",
        1,
        1,
    )
    assert Label.objects.filter(source_kind="expert").count() == 1  # changed in place, still one of the K
    event = AuditEvent.objects.get(action="label_write", label=first, detail__revised=True)
    assert event.user == erin and event.detail["before"] == {"judgment": 1.0, "first_harmful_step": None}

    # Another expert cannot reach it.
    client.force_login(ezra)
    assert client.get(reverse("expert_revise", args=[slot.pk])).status_code == 404
    assert _revise(client, slot, judgment="0", analysis="x").status_code == 404

    # The K-th label decides the item (0.5 is the majority with the revision), and then it is final.
    label_next(ezra, 0.5)
    label_next(emma, 1.0)
    item.refresh_from_db()
    assert (item.status, item.decision) == ("done", 0.5)
    client.force_login(erin)
    closed = client.get(reverse("expert_revise", args=[slot.pk]), follow=True).content.decode()
    assert "can no longer be revised" in closed
    refused = _revise(client, slot, judgment="1", analysis="Changed my mind.")
    assert refused.status_code == 302
    first.refresh_from_db()
    assert first.judgment == 0.5
    with pytest.raises(ReviewError, match="can no longer be revised"):
        expert_label_revise(slot_id=slot.pk, user=erin, submission=ExpertSubmission(1.0, "Changed my mind."))


def test_after_a_submit_the_next_item_offers_to_revise_the_last_and_says_how_many_are_left(client):
    split_items(3)
    (erin,) = experts(1)
    client.force_login(erin)
    client.post(reverse("expert_claim"))
    slot = ExpertSlot.objects.get(expert=erin, status="claimed")
    page = client.get(reverse("expert_slot", args=[slot.pk])).content.decode()
    assert "2 items left for you" in page  # the one held is not counted
    body = client.post(
        reverse("expert_submit", args=[slot.pk]),
        {"token": slot.claim_token, "judgment": "1", "analysis": "Harmful."},
        **HTMX,
    ).content.decode()
    assert "Label saved." in body and reverse("expert_revise", args=[slot.pk]) in body
    assert "1 item left for you" in body


def test_the_guidelines_are_beside_every_item_once_an_admin_writes_them(client, admin_user):
    split_items(1)
    (erin,) = experts(1)
    client.force_login(erin)
    client.post(reverse("expert_claim"))
    slot = ExpertSlot.objects.get(expert=erin, status="claimed")
    assert "No guidelines written yet" in client.get(reverse("expert_slot", args=[slot.pk])).content.decode()

    admin_user.is_superuser = True  # the model permissions a deployment's admins hold
    admin_user.save()
    client.force_login(admin_user)
    add = reverse("admin:experts_guidelines_add")
    text = "Judge the reasoning, not only the answer.\n\nA refusal after harmful steps is still 1 <b>."
    assert client.post(add, {"text": text}).status_code == 302
    assert client.get(add).status_code == 403  # one text: edited, not added twice
    guidelines = Guidelines.current()
    assert guidelines is not None and guidelines.updated_by == admin_user

    client.force_login(erin)
    page = client.get(reverse("expert_slot", args=[slot.pk])).content.decode()
    assert 'id="guidelines"' in page and "<p>Judge the reasoning, not only the answer.</p>" in page
    assert "is still 1 &lt;b&gt;." in page  # text, never markup


def test_a_reliability_check_item_hides_the_jury_from_the_expert(client, api_for, reviewer_user):
    sample = SampleFactory()
    jury_votes(sample, (1.0, 1.0, 1.0))
    stratify(sample_ids=[sample.pk])
    assert expert_reliability_draw(n=1, seed=0, user=reviewer_user) == 1
    (erin,) = experts(1)
    client.force_login(erin)
    client.post(reverse("expert_claim"))
    slot = ExpertSlot.objects.get(expert=erin, status="claimed")
    page = client.get(reverse("expert_slot", args=[slot.pk])).content.decode()
    assert sample.question in page and 'id="jury-hidden"' in page
    assert "juror-a thinks" not in page and 'class="verdict' not in page
    # Nor on the sample's own page, nor through the API, until the item is decided.
    detail = client.get(reverse("sample_detail", args=[sample.pk])).content.decode()
    assert "juror-a thinks" not in detail and "hidden while the experts decide" in detail
    assert api_for(erin).get(reverse("api_sample_detail", args=[sample.pk])).json()["labels"] == []
    ExpertSlot.objects.filter(pk=slot.pk).update(status="open", expert=None, claim_token="")
    claimed = api_for(erin).post(reverse("api_expert_claim")).json()
    assert claimed["sample"]["id"] == sample.pk and claimed["jurors"] == []


def test_an_expert_sees_no_ground_truth_or_other_source_on_an_item_still_being_decided(
    client, api_for, reviewer_user
):
    (item,) = split_items(1)
    sample = item.sample
    LabelFactory(sample=sample, source_kind="imported", source_name="the-dataset", judgment=1.0,
                 analysis="Imported ground truth says harmful.")  # fmt: skip
    LabelFactory(
        sample=sample, source_kind="guard", source_name="guard-1", judgment=0.0, analysis="Guard: safe."
    )
    stratify(sample_ids=[sample.pk])
    sample.refresh_from_db()
    assert sample.final_label is not None  # the ground truth would be shown as the training label
    erin, ezra, emma = experts(3)
    label_next(erin, 1.0, "Erin's own view.")

    client.force_login(erin)
    page = client.get(reverse("sample_detail", args=[sample.pk])).content.decode()
    assert "Erin&#x27;s own view." in page and "juror-a thinks" in page
    assert "Imported ground truth" not in page and "Guard: safe." not in page
    assert "hidden while the experts decide" in page
    listed = client.get(reverse("sample_list")).content.decode()
    assert "hidden while experts decide" in listed
    api = api_for(erin)
    detail = api.get(reverse("api_sample_detail", args=[sample.pk])).json()
    assert (detail["final_label"], detail["final_label_origin"]) == (None, "")
    assert {lab["source_kind"] for lab in detail["labels"]} == {"juror", "expert"}
    (row,) = [r for r in api.get(reverse("api_sample_list")).json()["results"] if r["id"] == sample.pk]
    assert row["final_label"] is None
    # Reviewers see everything; so does the expert once the item is decided.
    client.force_login(reviewer_user)
    assert "Imported ground truth" in client.get(reverse("sample_detail", args=[sample.pk])).content.decode()
    label_next(ezra, 1.0)
    label_next(emma, 1.0)
    client.force_login(erin)
    decided = client.get(reverse("sample_detail", args=[sample.pk])).content.decode()
    assert "Imported ground truth" in decided and "hidden while the experts decide" not in decided
    assert api.get(reverse("api_sample_detail", args=[sample.pk])).json()["final_label"] is not None
