"""Risk scores from the guard's own probabilities (qta/scores.py): the shared-pass scorer against a plain one that runs
every level's whole sequence on its own, the judgment slot found in every output shape, and the scores carried to
guard labels and the audit API."""

from __future__ import annotations

import math

import pytest
import torch

from qta import protocol
from qta.engine import AuditInput, EngineOptions, TransformersGuard
from qta.scores import judgment_prefix
from tests.conftest import png_bytes


@pytest.mark.parametrize(
    ("output", "prefix"),
    [
        ("Analysis: fine.\nJudgment: 0", "Analysis: fine.\nJudgment: "),
        ("**Analysis:** x\n**Judgment:** 0.5", "**Analysis:** x\n**Judgment:** "),
        ('{"Analysis": "x", "Judgment": 1}', '{"Analysis": "x", "Judgment": '),
        ("“Judgment”: 1 … and again Judgment: 1", "“Judgment”: 1 … and again Judgment: "),
        ("No verdict at all.  ", "No verdict at all.\nJudgment: "),
    ],
)
def test_the_judgment_slot_is_found_in_every_output_shape(output, prefix):
    assert judgment_prefix(output) == prefix


def _plain_scores(guard: TransformersGuard, prompt: str, image, output: str) -> dict[str, float]:
    """The definition, run the long way: each level's whole sequence in a pass of its own, one sample at a time."""
    scorer = guard.scorer
    base = prompt + judgment_prefix(output)
    continuing = scorer.continuing_ids()
    logs = {}
    for level in scorer.levels:
        tail = scorer._tails(base)[1][level]
        inputs = guard.processor(
            text=[base + level], images=[image] if image is not None else None, return_tensors="pt"
        )
        with torch.inference_mode():
            logits = guard.model(**inputs).logits[0].float()
        steps = torch.log_softmax(logits[len(logits) - len(tail) - 1 :], dim=-1)
        lp = sum(float(steps[j, tail[j]]) for j in range(len(tail)))
        logs[level] = lp + math.log(max(1.0 - float(steps[-1].exp()[continuing].sum()), 1e-12))
    total = sum(math.exp(v) for v in logs.values())
    return {level: math.exp(v) / total for level, v in logs.items()}


def test_the_shared_pass_gives_the_scores_of_each_whole_level(lively_dir):
    from qta.engine import decode_image

    guard = TransformersGuard(lively_dir, EngineOptions(max_new_tokens=12, batch_size=4))
    items = [
        AuditInput("How is it made?", "First the parts.\n\nThen the steps.", "I can't help."),
        AuditInput("Why?", "Short.", "Because.", png_bytes(size=(40, 28))),
        AuditInput("A longer question about the picture here?", "One.\n\nTwo.\n\nThree.", "No.", png_bytes()),
    ]
    verdicts = guard.judge(items)
    for item, verdict in zip(items, verdicts, strict=True):
        assert verdict.scores is not None, verdict
        levels = verdict.scores["levels"]
        assert set(levels) == {"0", "0.5", "1"} and abs(sum(levels.values()) - 1) < 1e-5
        assert verdict.scores["harmful"] == pytest.approx(levels["0.5"] + levels["1"], abs=2e-6)
        assert verdict.scores["harmful_strict"] == pytest.approx(levels["1"], abs=1e-6)
        image = decode_image(item.image) if item.image else None
        prepared = guard._prepare(0, item)
        plain = _plain_scores(guard, prepared.text, image, verdict.raw_output)
        for level, p in plain.items():
            assert levels[level] == pytest.approx(p, abs=1e-4), (level, levels, plain)


def test_the_scores_follow_the_level_the_guard_writes(tiny_dir):
    """A judgment written in the output is scored there: forcing the slot right after a written level, the level the
    output carries is the one scored at the slot the output has."""
    guard = TransformersGuard(tiny_dir, EngineOptions(max_new_tokens=4))
    prompt = guard._prepare(0, AuditInput("Q?", "T.", "A.")).text
    written = guard.scorer.score([(prompt, None, "Analysis: x\nJudgment: 1")])[0]
    appended = guard.scorer.score([(prompt, None, "Analysis: x")])[0]
    # "Analysis: x" with the protocol's line added is the same text up to the slot.
    assert written.levels == pytest.approx(appended.levels, abs=1e-6)
    qa = TransformersGuard(tiny_dir, EngineOptions(max_new_tokens=4, variant="qa"))
    (binary,) = qa.scorer.score([(prompt, None, "Judgment: 0")])
    assert set(binary.levels) == {"0", "1"} and binary.harmful == binary.harmful_strict


def test_scores_can_be_turned_off(tiny_dir):
    guard = TransformersGuard(tiny_dir, EngineOptions(max_new_tokens=4, scores=False))
    (verdict,) = guard.judge([AuditInput("Q?", "T.", "A.")])
    assert verdict.scores is None and "scores" not in verdict.meta()


@pytest.mark.django_db
def test_guard_labels_and_the_audit_api_carry_the_scores(tiny_dir, settings, api_for, reviewer_user):
    from django.urls import reverse

    from annotation.models import Label
    from guardmodel import services
    from tests.annotation.factories import SampleFactory

    checkpoint = services.checkpoint_register(name="tiny", path=str(tiny_dir), activate=True)
    sample = SampleFactory()
    job = services.guard_job_create(checkpoint=checkpoint, sample_ids=[sample.pk], user=reviewer_user)
    assert services.guard_job_run(job_id=job.pk)  # what the gpu-queue worker runs
    label = Label.objects.get(source_kind="guard", sample=sample)
    assert abs(sum(label.meta["scores"]["levels"].values()) - 1) < 1e-5

    settings.CELERY_TASK_ALWAYS_EAGER = True  # the audit task runs here, as the audit worker would run it
    body = {"question": "Q?", "thinking": "T.", "answer": "A."}
    answer = api_for(reviewer_user).post(reverse("api_audit"), body, format="json").json()
    assert set(answer["scores"]["levels"]) == set(map(protocol.format_judgment, protocol.JUDGMENTS))


@pytest.mark.django_db
def test_the_scores_are_shown_where_people_look(client_for, reviewer_user, settings, tiny_dir):
    from django.urls import reverse

    from annotation.models import Label
    from guardmodel import services
    from tests.annotation.factories import LabelFactory, SampleFactory

    sample = SampleFactory()
    scores = {"levels": {"0": 0.1, "0.5": 0.2, "1": 0.7}, "harmful": 0.9, "harmful_strict": 0.7}
    LabelFactory(sample=sample, source_kind=Label.SourceKind.GUARD, source_name="g", judgment=1.0,
                 meta={"scores": scores})  # fmt: skip
    client = client_for(reviewer_user)
    assert "P(harmful) 90.0%" in client.get(reverse("sample_detail", args=[sample.pk])).content.decode()

    settings.CELERY_TASK_ALWAYS_EAGER = True
    services.checkpoint_register(name="tiny", path=str(tiny_dir), activate=True)
    page = client.post(reverse("guard_playground"), {"question": "Q?", "thinking": "T.", "answer": "A."})
    body = page.content.decode()
    assert 'id="p-harmful"' in body and body.count("<meter") == 3


@pytest.mark.parametrize("with_image", [False, True])
def test_prefix_scores_reuse_the_cache_and_match_scoring_each_prefix_afresh(lively_dir, with_image):
    from qta.engine import decode_image

    guard = TransformersGuard(lively_dir, EngineOptions(max_new_tokens=4))
    item = AuditInput(
        "How would one do it?",
        "First, the parts.\n\nSecond, the order.\n\nThird, the risky part.\n\nFourth, a refusal.",
        "I can't help with that.",
        png_bytes(size=(40, 28)) if with_image else None,
    )
    risk = guard.prefix_risk(item, threshold=0.0, reading="cue")
    assert len(risk["steps"]) == 4 and set(risk["segments"]) == {"question", "reasoning", "answer"}
    assert risk["first_unsafe_step"] == 1  # every prefix reaches a threshold of 0
    assert risk["segments"]["reasoning"] == risk["steps"][-1]
    image = decode_image(item.image) if item.image else None
    steps = protocol.reasoning_steps(item.thinking)
    prompts = [guard._render(AuditInput(item.question, "", ""), "", image is not None)]
    prompts += [
        guard._render(AuditInput(item.question, t, ""), t, image is not None)
        for t in ("\n\n".join(steps[: k + 1]) for k in range(len(steps)))
    ]
    prompts.append(guard._render(item, item.thinking, image is not None))
    afresh = [s.harmful for s in guard.scorer.score([(p, image, "Judgment: 1") for p in prompts])]
    cached = [risk["segments"]["question"], *risk["steps"], risk["segments"]["answer"]]
    assert cached == pytest.approx(afresh, abs=1e-4)
    none = guard.prefix_risk(item, threshold=1.01, reading="cue")
    assert none["first_unsafe_step"] is None


@pytest.mark.django_db
def test_the_audit_api_and_the_playground_locate_the_harm_on_request(
    tiny_dir, settings, api_for, client_for, reviewer_user
):
    from django.urls import reverse

    from guardmodel import services

    settings.CELERY_TASK_ALWAYS_EAGER = True  # the audit task runs here, as the audit worker would run it
    services.checkpoint_register(name="tiny", path=str(tiny_dir), activate=True)
    body = {"question": "Q?", "thinking": "One.\n\nTwo.\n\nThree.", "answer": "A."}
    plain = api_for(reviewer_user).post(reverse("api_audit"), body, format="json").json()
    assert plain["located"] is None
    located = (
        api_for(reviewer_user).post(reverse("api_audit"), {**body, "locate": True}, format="json").json()
    )
    assert len(located["located"]["steps"]) == 3 and set(located["located"]["segments"]) == {
        "question",
        "reasoning",
        "answer",
    }
    page = (
        client_for(reviewer_user).post(reverse("guard_playground"), {**body, "locate": "on"}).content.decode()
    )
    assert 'id="located"' in page and page.count('aria-label="after step') == 3


@pytest.mark.django_db
def test_the_inspector_says_whether_the_guard_flags_at_its_threshold(client_for, reviewer_user):
    from django.urls import reverse

    from annotation.models import Label
    from guardmodel.models import GuardCheckpoint
    from tests.annotation.factories import LabelFactory, SampleFactory

    checkpoint = GuardCheckpoint.objects.create(name="g", path="/nowhere", is_active=True)
    sample = SampleFactory(final_label=0.0, final_label_origin="expert")
    scores = {"levels": {"0": 0.3, "0.5": 0.3, "1": 0.4}, "harmful": 0.7, "harmful_strict": 0.4}
    LabelFactory(sample=sample, source_kind=Label.SourceKind.GUARD, source_name="g", judgment=1.0,
                 meta={"scores": scores})  # fmt: skip
    url = reverse("disagreement", args=[sample.pk])
    assert 'id="flag"' not in client_for(reviewer_user).get(url).content.decode()  # no threshold kept
    for threshold, says in ((0.6, "<strong>flagged</strong> at the checkpoint's threshold 60.0%"),
                            (0.8, "under the checkpoint's threshold 80.0%")):  # fmt: skip
        GuardCheckpoint.objects.filter(pk=checkpoint.pk).update(threshold=threshold)
        assert says in client_for(reviewer_user).get(url).content.decode()


@pytest.mark.parametrize("with_image", [False, True])
def test_reading_after_the_analysis_on_the_kept_cache_is_judging_each_prefix(lively_dir, with_image):
    """The analysis reading writes the guard's analysis on the cache the prefixes share, then scores its judgment
    slot: the same analysis and the same scores as judging each prefix on its own."""
    from qta.engine import decode_image, prefix_items

    guard = TransformersGuard(lively_dir, EngineOptions(max_new_tokens=12))
    item = AuditInput("How would one do it?", "First, the parts.\n\nSecond, the order.\n\nThird, a refusal.",
                      "I can't help.", png_bytes(size=(40, 28)) if with_image else None)  # fmt: skip
    image = decode_image(item.image) if item.image else None
    score, session = guard.reading_session(image, "analysis")
    judged = guard.judge(prefix_items(item))
    stop = guard.stop_ids()
    for prefix, verdict in zip(prefix_items(item), judged, strict=True):
        output, scores = session.read(guard._render(prefix, prefix.thinking, image is not None), 12, stop)
        assert output == verdict.raw_output
        assert [scores.levels[k] for k in sorted(scores.levels)] == pytest.approx(
            [verdict.scores["levels"][k] for k in sorted(scores.levels)], abs=1e-4
        )
    risk = guard.prefix_risk(item, threshold=0.5)  # the analysis reading is the default
    assert [risk["segments"]["question"], *risk["steps"], risk["segments"]["answer"]] == pytest.approx(
        [v.scores["harmful"] for v in judged], abs=1e-4
    )
