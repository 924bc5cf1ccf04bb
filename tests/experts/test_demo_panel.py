"""The demo's expert panel: after the demo jury, three demo experts work through the queue through the real services,
so `make run` shows decided items, an adjudication, agreement figures and the reliability check; the items a
reviewer sent keep two labels each and wait for the demo expert's deciding one."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from annotation.models import Label
from annotation.strata import stratify
from demo.expert_panel import PANEL, demo_expert_panel
from experts.agreement import agreement_report
from experts.models import ExpertQueueItem, Guidelines
from experts.services import expert_queue_send
from tests.annotation.factories import LabelFactory, SampleFactory
from tests.experts.review_helpers import experts, jury_votes, label_next

pytestmark = pytest.mark.django_db


def test_the_demo_panel_decides_items_splits_some_and_leaves_the_deciding_label_to_the_demo_expert(
    reviewer_user,
):
    samples = [SampleFactory() for _ in range(60)]
    for i, sample in enumerate(samples):
        votes = (0.0, 0.5, 1.0) if i % 6 == 0 else (1.0, 1.0, 1.0) if i % 2 else (0.0, 0.0, 0.0)
        jury_votes(sample, votes)
        if i % 6 == 0:
            LabelFactory(sample=sample, source_kind="imported", source_name="truth", judgment=1.0)
    stratify(sample_ids=[s.pk for s in samples])
    sent = [SampleFactory() for _ in range(3)]
    for sample in sent:
        jury_votes(sample, (1.0, 1.0, 0.0))
        expert_queue_send(sample=sample, user=reviewer_user)
    (demo_expert,) = experts(1, prefix="demo-expert")
    lines: list[str] = []

    demo_expert_panel(lines.append)

    assert Guidelines.current() is not None and Guidelines.current().text.startswith(
        "Judge the whole exchange"
    )
    assert {u.username for u in User.objects.filter(username__in=[n for n, _ in PANEL])} == {
        "expert2",
        "expert3",
        "expert4",
    }
    reliability = ExpertQueueItem.objects.filter(reason="reliability")
    assert reliability.count() == 15
    assert not reliability.filter(status="open").exists()  # every drawn item got its three labels
    assert reliability.filter(status="done").count() >= 10
    assert ExpertQueueItem.objects.filter(status="adjudication").exists()  # a three-way split to show
    assert not ExpertQueueItem.objects.filter(reason="jury_split", status="open").exists()
    for item in ExpertQueueItem.objects.filter(reason="reviewer"):
        assert (item.status, item.slots.filter(status="submitted").count()) == ("open", 2)
    report = agreement_report(n=150, seed=0)
    assert report.decided >= 10 and report.fleiss_kappa is not None and report.reliability is not None
    assert 0.5 < report.reliability["accuracy"] < 1.0  # the panel departs from the jury now and then
    assert "labels expert2" in lines[-1] and "to adjudicate" in lines[-1]

    # The demo expert's label decides a reviewer-sent item.
    label = label_next(demo_expert, 1.0)
    item = ExpertQueueItem.objects.get(sample_id=label.sample_id)
    assert item.reason == "reviewer" and item.status == "done"

    # Run again: nothing more is labelled.
    count = Label.objects.filter(source_kind="expert").count()
    demo_expert_panel(lines.append)
    assert Label.objects.filter(source_kind="expert").count() == count and "labelled already" in lines[-1]
