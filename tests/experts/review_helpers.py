"""Building expert-queue situations through the real services: juror labels, stratification, expert users."""

from __future__ import annotations

from django.contrib.auth.models import Group, User

from annotation.models import Label
from annotation.strata import stratify
from common.roles import EXPERT
from experts.models import ExpertQueueItem
from experts.services import ExpertSubmission, expert_label_submit, expert_slot_claim
from tests.annotation.factories import LabelFactory, SampleFactory


def jury_votes(sample, votes, names=("juror-a", "juror-b", "juror-c")) -> None:
    for name, vote in zip(names, votes, strict=True):
        LabelFactory(
            sample=sample,
            source_name=name,
            judgment=vote,
            analysis=f"{name} thinks {vote}",
            status=Label.Status.VALID if vote is not None else Label.Status.INVALID,
        )


def split_items(count: int, **sample_fields) -> list[ExpertQueueItem]:
    """`count` samples the jury split 1:1:1, stratified into the expert queue (in sample order)."""
    samples = [SampleFactory(**sample_fields) for _ in range(count)]
    for sample in samples:
        jury_votes(sample, (0.0, 0.5, 1.0))
    stratify(sample_ids=[s.pk for s in samples])
    return list(ExpertQueueItem.objects.filter(sample__in=samples).order_by("id"))


def experts(count: int, prefix: str = "expert") -> list[User]:
    group, _ = Group.objects.get_or_create(name=EXPERT)
    users = []
    for i in range(count):
        user = User.objects.create_user(username=f"{prefix}{i}", password=f"pw-{prefix}{i}")
        user.groups.add(group)
        users.append(user)
    return users


def label_next(user, judgment: float, analysis: str = "My analysis.", **kwargs) -> Label:
    slot = expert_slot_claim(user=user, **kwargs)
    assert slot is not None, f"nothing left for {user}"
    return expert_label_submit(
        slot_id=slot.pk,
        user=user,
        token=slot.claim_token,
        submission=ExpertSubmission(judgment=judgment, analysis=analysis),
        **kwargs,
    )
