"""Where the guard locates the harm: guard jobs that keep it on their labels, the sample page and the inspector that
show it beside the experts' marks, and the evaluation's exact / within-one-step agreement with those marks."""

from __future__ import annotations

import pytest
from django.urls import reverse

from annotation.models import Label
from guardmodel import services
from guardmodel.models import GuardCheckpoint
from tests.annotation.factories import LabelFactory, SampleFactory

pytestmark = pytest.mark.django_db


def _located(first: int | None, steps: int = 4) -> dict:
    values = [0.9 if first is not None and k + 1 >= first else 0.1 for k in range(steps)]
    return {"segments": {"question": 0.1, "reasoning": values[-1], "answer": values[-1]}, "steps": values,
            "threshold": 0.5, "first_unsafe_step": first}  # fmt: skip


def test_a_guard_job_asked_to_locate_keeps_each_samples_steps_on_its_label(tiny_dir, admin_user):
    checkpoint = services.checkpoint_register(name="tiny", path=str(tiny_dir), activate=True)
    samples = [SampleFactory(thinking="One.\n\nTwo.\n\nThree."), SampleFactory(thinking="")]
    job = services.guard_job_create(checkpoint=checkpoint, sample_ids=[s.pk for s in samples], user=admin_user,
                                    locate=True)  # fmt: skip
    assert services.guard_job_run(job_id=job.pk)
    first, second = (Label.objects.get(sample=s, source_kind="guard") for s in samples)
    assert len(first.meta["located"]["steps"]) == 3 and second.meta["located"]["steps"] == []
    plain = services.guard_job_create(checkpoint=checkpoint, sample_ids=[SampleFactory().pk], user=admin_user)
    assert services.guard_job_run(job_id=plain.pk)
    assert "located" not in Label.objects.filter(source_kind="guard").order_by("-pk").first().meta


def test_the_evaluation_compares_the_located_step_with_the_experts_marks(client_for, reviewer_user):
    GuardCheckpoint.objects.create(name="g", path="/nowhere")
    # (guard's first unsafe step, the experts' marks): exact, one late, two early, missed, and no mark at all.
    cases = [(2, [2, 2, 3]), (3, [2]), (1, [3, 3]), (None, [2]), (2, [])]
    for found, marks in cases:
        sample = SampleFactory(subset="T", split="test")
        LabelFactory(
            sample=sample, source_kind="imported", source_name="truth", prompt_version="", judgment=1.0
        )
        LabelFactory(sample=sample, source_kind="guard", source_name="g", judgment=1.0,
                     meta={"located": _located(found)})  # fmt: skip
        for i, mark in enumerate(marks):
            LabelFactory(sample=sample, source_kind="expert", source_name=f"e{i}", judgment=1.0,
                         prompt_version="expert-round-1", meta={"first_harmful_step": mark})  # fmt: skip
    evaluation = services.evaluation_run(source_kind="guard", source_name="g", subsets=["T"])
    loc = evaluation.metrics["localisation"]
    assert (loc["located"], loc["n"], loc["missed"]) == (5, 4, 1)
    assert loc["exact"] == pytest.approx(1 / 4) and loc["within_one"] == pytest.approx(2 / 4)
    assert loc["mean_offset"] == pytest.approx((0 + 1 - 2) / 3)
    page = client_for(reviewer_user).get(reverse("evaluation_detail", args=[evaluation.pk])).content.decode()
    assert 'id="loc-exact">25.0%' in page and 'id="loc-within-one">50.0%' in page


def test_the_sample_page_and_the_inspector_show_the_steps_beside_the_experts_mark(client_for, reviewer_user):
    GuardCheckpoint.objects.create(name="g", path="/nowhere", is_active=True)
    sample = SampleFactory(
        thinking="One.\n\nTwo.\n\nThree.\n\nFour.", final_label=1.0, final_label_origin="expert"
    )
    LabelFactory(
        sample=sample, source_kind="guard", source_name="g", judgment=0.0, meta={"located": _located(3)}
    )
    LabelFactory(sample=sample, source_kind="expert", source_name="e", judgment=1.0, prompt_version="expert-round-1",
                 meta={"first_harmful_step": 2})  # fmt: skip
    client = client_for(reviewer_user)
    for url in (reverse("sample_detail", args=[sample.pk]), reverse("disagreement", args=[sample.pk])):
        page = client.get(url).content.decode()
        assert 'id="first-unsafe">step 3<' in page and "the experts marked step 2" in page, url
        assert page.count('class=" marked"') == 1 and page.count('class="over"') == 2, url
