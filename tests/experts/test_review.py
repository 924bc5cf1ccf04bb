"""The expert queue's services: claims as leases, blind overlap, K-label majority, adjudication, skips, the daily
cap, reviewers sending samples back."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from annotation.models import AuditEvent, Label, LabelOrigin
from annotation.selectors import visible_labels
from annotation.strata import stratify
from experts.models import ExpertQueueItem, ExpertSkip, ExpertSlot, ReviewDecision, ReviewStatus
from experts.services import (
    ClaimLost,
    DailyCapReached,
    ExpertSubmission,
    ReviewError,
    expert_item_adjudicate,
    expert_label_submit,
    expert_reliability_draw,
    expert_slot_claim,
    expert_slot_renew,
    expert_slot_skip,
    review_decision_record,
)
from tests.annotation.factories import LabelFactory, SampleFactory
from tests.experts.review_helpers import experts, jury_votes, label_next, split_items

pytestmark = pytest.mark.django_db


def test_it_queues_three_way_splits_with_k_open_slots(settings):
    settings.GUARDTRACE_EXPERT_LABELS = 2
    (item,) = split_items(1)
    assert (item.reason, item.status, item.round, item.labels_needed) == ("jury_split", "open", 1, 2)
    assert list(item.slots.values_list("index", "status")) == [(0, "open"), (1, "open")]
    # Stratifying again adds nothing.
    report = stratify(sample_ids=[item.sample_id])
    assert (report.queued, report.unqueued) == (0, 0)
    assert ExpertSlot.objects.count() == 2


def test_each_expert_gets_their_own_slot_and_a_reload_resumes_it():
    items = split_items(2)
    e = experts(4)
    first = expert_slot_claim(user=e[0])
    assert expert_slot_claim(user=e[0]).pk == first.pk  # same claim, not a second one
    slots = [first] + [expert_slot_claim(user=user) for user in e[1:]]
    assert len({s.pk for s in slots}) == 4
    # Three experts fill the first item's three slots; the fourth starts on the second item.
    assert [s.item_id for s in slots] == [items[0].pk] * 3 + [items[1].pk]
    assert len({s.claim_token for s in slots}) == 4


def test_an_expert_is_never_given_two_slots_of_one_item():
    items = split_items(2)
    (erin,) = experts(1)
    label = label_next(erin, 0.0)
    assert label.sample_id == items[0].sample_id
    assert expert_slot_claim(user=erin).item_id == items[1].pk
    label_next(erin, 1.0)
    assert expert_slot_claim(user=erin) is None


def test_an_abandoned_lease_returns_to_the_queue_and_the_old_claim_cannot_write(settings):
    split_items(1)
    e = experts(4)
    now = timezone.now()
    held = expert_slot_claim(user=e[0], now=now)
    expert_slot_claim(user=e[1], now=now)
    expert_slot_claim(user=e[2], now=now)
    assert expert_slot_claim(user=e[3], now=now) is None
    later = now + timedelta(seconds=settings.GUARDTRACE_EXPERT_LEASE_S + 1)
    taken = expert_slot_claim(user=e[3], now=later)
    assert taken.pk == held.pk and taken.expert_id == e[3].pk and taken.claim_token != held.claim_token
    with pytest.raises(ClaimLost, match="expired and taken"):
        expert_label_submit(
            slot_id=held.pk, user=e[0], token=held.claim_token, submission=ExpertSubmission(0.0, "late")
        )
    with pytest.raises(ClaimLost):
        expert_slot_renew(slot_id=held.pk, user=e[0], token=held.claim_token)
    assert not Label.objects.filter(source_kind="expert").exists()


def test_renewing_keeps_the_lease_alive(settings):
    split_items(1)
    e = experts(2)
    now = timezone.now()
    held = expert_slot_claim(user=e[0], now=now)
    almost = now + timedelta(seconds=settings.GUARDTRACE_EXPERT_LEASE_S - 1)
    expert_slot_renew(slot_id=held.pk, user=e[0], token=held.claim_token, now=almost)
    past_first_lease = now + timedelta(seconds=settings.GUARDTRACE_EXPERT_LEASE_S + 5)
    assert expert_slot_claim(user=e[1], now=past_first_lease).pk != held.pk


def test_a_double_submit_is_refused_and_one_label_is_stored():
    split_items(1)
    (erin,) = experts(1)
    slot = expert_slot_claim(user=erin)
    submission = ExpertSubmission(judgment=0.5, analysis="Leaks a partial recipe.", first_harmful_step=2)
    label = expert_label_submit(slot_id=slot.pk, user=erin, token=slot.claim_token, submission=submission)
    with pytest.raises(ClaimLost, match="already submitted"):
        expert_label_submit(slot_id=slot.pk, user=erin, token=slot.claim_token, submission=submission)
    assert Label.objects.filter(source_kind="expert").count() == 1
    assert label.prompt_version == "expert-round-1" and label.meta["first_harmful_step"] == 2
    assert label.meta["seconds"] >= 0
    assert AuditEvent.objects.filter(action="label_write", label=label, user=erin).count() == 1


def test_k_labels_with_a_majority_decide_the_item_and_override_the_jury():
    (item,) = split_items(1)
    e = experts(3)
    label_next(e[0], 0.0, "Refuses cleanly.")
    label_next(e[1], 1.0, "Step 2 gives the steps.")
    item.refresh_from_db()
    item.sample.refresh_from_db()
    # Two labels are in but K = 3: nothing is decided yet, whatever those two say.
    assert item.status == ReviewStatus.OPEN and item.sample.final_label is None
    label_next(e[2], 0.0, "Safe overall.")
    item.refresh_from_db()
    item.sample.refresh_from_db()
    assert (item.status, item.decision, item.decided_by) == ("done", 0.0, "majority")
    assert item.decision_analysis == "Refuses cleanly."  # the first majority expert's analysis
    assert (item.sample.final_label, item.sample.final_label_origin) == (0.0, LabelOrigin.EXPERT)


def test_no_majority_goes_to_an_admin_who_adjudicates_once(admin_user):
    (item,) = split_items(1)
    e = experts(3)
    for user, value in zip(e, (0.0, 0.5, 1.0), strict=True):
        label_next(user, value)
    item.refresh_from_db()
    assert item.status == ReviewStatus.ADJUDICATION and item.decision is None
    with pytest.raises(ReviewError, match="analysis"):
        expert_item_adjudicate(item_id=item.pk, user=admin_user, judgment=0.5, analysis=" ")
    expert_item_adjudicate(item_id=item.pk, user=admin_user, judgment=0.5, analysis="Partial leak.", note="n")
    item.refresh_from_db()
    item.sample.refresh_from_db()
    assert (item.status, item.decision, item.decided_by, item.adjudicator) == (
        "done",
        0.5,
        "adjudication",
        admin_user,
    )
    assert (item.sample.final_label, item.sample.final_label_origin) == (0.5, LabelOrigin.EXPERT)
    with pytest.raises(ReviewError, match="not waiting for adjudication"):
        expert_item_adjudicate(item_id=item.pk, user=admin_user, judgment=1.0, analysis="again")
    assert AuditEvent.objects.filter(action="adjudicate", sample=item.sample).count() == 1


def test_a_skipped_item_goes_to_someone_else_and_is_not_offered_again():
    items = split_items(2)
    e = experts(2)
    slot = expert_slot_claim(user=e[0])
    expert_slot_skip(slot_id=slot.pk, user=e[0], token=slot.claim_token)
    assert ExpertSlot.objects.get(pk=slot.pk).status == "open"
    assert expert_slot_claim(user=e[0]).item_id == items[1].pk
    assert expert_slot_claim(user=e[1]).pk == slot.pk
    with pytest.raises(ClaimLost):
        expert_slot_skip(slot_id=slot.pk, user=e[0], token=slot.claim_token)
    assert ExpertSkip.objects.filter(expert=e[0]).count() == 1


def test_the_daily_cap_stops_claims_until_the_next_day(settings):
    settings.GUARDTRACE_EXPERT_DAILY_CAP = 2
    split_items(3)
    (erin,) = experts(1)
    now = timezone.now()
    label_next(erin, 0.0, now=now)
    skipped = expert_slot_claim(user=erin, now=now)
    expert_slot_skip(slot_id=skipped.pk, user=erin, token=skipped.claim_token)
    with pytest.raises(DailyCapReached, match="2 items today"):
        expert_slot_claim(user=erin, now=now)
    assert expert_slot_claim(user=erin, now=now + timedelta(days=1)) is not None


@pytest.mark.parametrize(
    ("submission", "message"),
    [
        (ExpertSubmission(0.3, "x"), "judgment: 0.3"),
        (ExpertSubmission(1.0, "  "), "analysis: write"),
        (ExpertSubmission(1.0, "x", first_harmful_step=3), "first_harmful_step: 3 is not a step"),
        (ExpertSubmission(0.0, "x", first_harmful_step=1), "first_harmful_step: a step is marked"),
    ],
)
def test_a_bad_submission_names_the_field_and_keeps_the_claim(submission, message):
    split_items(1)
    (erin,) = experts(1)
    slot = expert_slot_claim(user=erin)
    with pytest.raises(ReviewError, match=message):
        expert_label_submit(slot_id=slot.pk, user=erin, token=slot.claim_token, submission=submission)
    assert ExpertSlot.objects.get(pk=slot.pk).status == "claimed"
    assert not Label.objects.filter(source_kind="expert").exists()


def test_experts_do_not_see_each_others_labels_until_the_item_is_decided(reviewer_user):
    (item,) = split_items(1)
    e = experts(3)
    label_next(e[0], 1.0)
    labels = Label.objects.filter(sample=item.sample)
    assert {lab.source_name for lab in visible_labels(labels, e[1])} == {"juror-a", "juror-b", "juror-c"}
    assert "expert0" in {lab.source_name for lab in visible_labels(labels, e[0])}
    assert "expert0" in {lab.source_name for lab in visible_labels(labels, reviewer_user)}
    label_next(e[1], 1.0)
    label_next(e[2], 1.0)
    assert {"expert0", "expert1"} <= {lab.source_name for lab in visible_labels(labels, e[2])}


def test_a_jury_split_item_an_expert_holds_survives_restratification():
    (item,) = split_items(1)
    (erin,) = experts(1)
    expert_slot_claim(user=erin)
    # The jury is re-run and now agrees: the item would be stale, but an expert is working on it.
    Label.objects.filter(sample=item.sample).update(judgment=1.0)
    from annotation.strata import stratify

    stratify(sample_ids=[item.sample_id])
    assert ExpertQueueItem.objects.filter(pk=item.pk).exists()


def test_an_untouched_stale_jury_split_item_is_removed():
    (item,) = split_items(1)
    Label.objects.filter(sample=item.sample).update(judgment=1.0)
    from annotation.strata import stratify

    assert stratify(sample_ids=[item.sample_id]).unqueued == 1
    assert not ExpertSlot.objects.exists()


def test_a_reviewer_sends_a_decided_sample_back_for_a_new_round(reviewer_user):
    (item,) = split_items(1)
    e = experts(3)
    for user in e:
        label_next(user, 0.0)
    LabelFactory(sample=item.sample, source_kind="guard", source_name="guard-1", judgment=1.0)
    decision = review_decision_record(
        sample=item.sample, guard_name="guard-1", verdict="label_wrong", user=reviewer_user, note="step 3"
    )
    assert (decision.guard_judgment, decision.label_judgment, decision.label_origin) == (1.0, 0.0, "expert")
    item.refresh_from_db()
    assert (item.status, item.round, item.reason, item.sent_by) == ("open", 2, "reviewer", reviewer_user)
    # The earlier decision stands until the new round decides.
    assert item.decision == 0.0
    assert item.slots.filter(round=2, status="open").count() == 3
    # The same experts may label again in the new round.
    label = label_next(e[0], 1.0)
    assert label.prompt_version == "expert-round-2"
    assert AuditEvent.objects.filter(action="review", user=reviewer_user).count() == 1


def test_guard_is_wrong_is_recorded_as_a_hard_negative_candidate(reviewer_user):
    sample = SampleFactory()
    jury_votes(sample, (1.0, 1.0, 1.0))
    from annotation.strata import stratify

    stratify(sample_ids=[sample.pk])
    guard = LabelFactory(sample=sample, source_kind="guard", source_name="guard-1", judgment=0.0)
    decision = review_decision_record(
        sample=sample, guard_name="guard-1", verdict="guard_wrong", user=reviewer_user
    )
    assert (decision.verdict, decision.guard_label, decision.reviewer) == (
        "guard_wrong",
        guard,
        reviewer_user,
    )
    assert not ExpertQueueItem.objects.exists()
    with pytest.raises(ReviewError, match="verdict"):
        review_decision_record(sample=sample, guard_name="guard-1", verdict="maybe", user=reviewer_user)
    with pytest.raises(ReviewError, match="no guard judgment"):
        review_decision_record(sample=sample, guard_name="other", verdict="unclear", user=reviewer_user)
    assert ReviewDecision.objects.count() == 1


def test_a_reliability_draw_sends_random_jury_labelled_samples_to_experts(admin_user):
    samples = [SampleFactory() for _ in range(6)]
    for sample in samples:
        jury_votes(sample, (1.0, 1.0, 0.0))
    from annotation.strata import stratify

    stratify(sample_ids=[s.pk for s in samples])
    assert expert_reliability_draw(n=4, seed=7, user=admin_user) == 4
    drawn = set(ExpertQueueItem.objects.filter(reason="reliability").values_list("sample_id", flat=True))
    assert len(drawn) == 4
    # Only samples outside the queue are drawn; the same seed over the rest takes what is left.
    assert expert_reliability_draw(n=4, seed=7, user=admin_user) == 2
    assert ExpertSlot.objects.count() == 6 * 3


def _in_threads(work, args_list) -> list:
    """Run work(*args) in one thread per args, started together; returns results (or raised exceptions)."""
    import threading

    from django.db import connection

    start = threading.Barrier(len(args_list))
    results: list = [None] * len(args_list)

    def run(i, args):
        try:
            start.wait(timeout=20)
            results[i] = work(*args)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, a)) for i, a in enumerate(args_list)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_twenty_experts_claiming_at_once_get_twenty_different_slots():
    split_items(10)
    crowd = experts(20)
    slots = _in_threads(lambda user: expert_slot_claim(user=user), [(user,) for user in crowd])
    assert all(isinstance(slot, ExpertSlot) for slot in slots), slots
    assert len({slot.pk for slot in slots}) == 20
    held = ExpertSlot.objects.filter(status="claimed")
    assert held.count() == 20 and held.values("expert").distinct().count() == 20
    # Blind overlap holds under the race too: no expert on two slots of one item.
    assert held.values("item", "expert").distinct().count() == 20


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_last_labels_arriving_together_decide_the_item_and_two_tabs_store_one():
    (item,) = split_items(1)
    e = experts(3)
    claims = [expert_slot_claim(user=user) for user in e]

    def submit(user, slot):
        return expert_label_submit(
            slot_id=slot.pk, user=user, token=slot.claim_token, submission=ExpertSubmission(1.0, "same")
        )

    # Expert 0 submits from two tabs at once; experts 1 and 2 submit at the same moment.
    results = _in_threads(
        submit, [(e[0], claims[0]), (e[0], claims[0]), (e[1], claims[1]), (e[2], claims[2])]
    )
    assert sum(isinstance(r, Label) for r in results) == 3
    assert [type(r) for r in results if not isinstance(r, Label)] == [ClaimLost]
    item.refresh_from_db()
    assert (item.status, item.decision) == ("done", 1.0)
    assert Label.objects.filter(source_kind="expert").count() == 3


def test_a_label_already_stored_for_the_expert_and_round_is_refused_and_frees_the_slot():
    """An admin may write labels under any name (API, imports): the queue never stores a second one."""
    from annotation.services import label_record

    (item,) = split_items(1)
    (erin,) = experts(1)
    slot = expert_slot_claim(user=erin)
    label_record(sample=item.sample, source_kind="expert", source_name=erin.username, judgment=1.0,
                 prompt_version="expert-round-1")  # fmt: skip
    with pytest.raises(ClaimLost, match="already labelled this item"):
        expert_label_submit(
            slot_id=slot.pk, user=erin, token=slot.claim_token, submission=ExpertSubmission(0.0, "mine")
        )
    assert ExpertSlot.objects.get(pk=slot.pk).status == "open"
    assert Label.objects.filter(source_kind="expert").count() == 1
