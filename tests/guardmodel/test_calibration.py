"""Calibration and ranking of risk scores (qta/calibration.py), against scikit-learn where it has the same measure,
and against data whose miscalibration is known."""

from __future__ import annotations

import math
import random

import pytest
from sklearn import metrics as sklearn_metrics  # installed with the ml extra (sentence-transformers needs it)

from qta import calibration as cal


def _data(n: int, seed: int) -> tuple[list[float], list[bool]]:
    rng = random.Random(seed)
    scores = [round(rng.random(), 2) for _ in range(n)]  # rounded: many ties
    truth = [rng.random() < s for s in scores]
    return scores, truth


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_and_auprc_match_scikit_learn_with_ties(seed):
    scores, truth = _data(500, seed)
    assert cal.auroc(scores, truth) == pytest.approx(sklearn_metrics.roc_auc_score(truth, scores), abs=1e-9)
    assert cal.auprc(scores, truth) == pytest.approx(
        sklearn_metrics.average_precision_score(truth, scores), abs=1e-9
    )
    points = cal.roc_points(scores, truth)
    area = sum((x2 - x1) * (y1 + y2) / 2 for (x1, y1), (x2, y2) in zip(points, points[1:], strict=False))
    assert area == pytest.approx(cal.auroc(scores, truth), abs=1e-9)


def test_one_class_only_has_no_ranking_measure():
    assert cal.auroc([0.2, 0.9], [True, True]) is None and cal.auprc([0.2, 0.9], [False, False]) is None


def test_expected_calibration_error_by_hand():
    # Bin [0.1, 0.2): two at 0.1, one harmful → |0.1 − 0.5|; bin [0.9, 1]: two at 0.9 and 1.0, both harmful → |0.95 − 1|.
    scores, truth = [0.1, 0.1, 0.9, 1.0], [True, False, True, True]
    assert cal.expected_calibration_error(scores, truth) == pytest.approx(0.5 * 0.4 + 0.5 * 0.05)
    bins = cal.reliability(scores, truth)
    assert [b.n for b in bins] == [0, 2, 0, 0, 0, 0, 0, 0, 0, 2] and bins[9].harmful_rate == 1.0
    # Calibrated by construction: the error shrinks with the sample.
    scores, truth = _data(20_000, 7)
    assert cal.expected_calibration_error(scores, truth) < 0.02


def test_a_threshold_meets_its_target_with_the_most_of_the_other_measure():
    scores, truth = _data(400, 3)
    chosen = cal.threshold_for(scores, truth, precision=0.8)
    assert chosen is not None and chosen.precision >= 0.8
    candidates = sorted(set(scores))
    best_recall = 0.0
    for t in candidates:  # every threshold, the long way
        flagged = [y for s, y in zip(scores, truth, strict=True) if s >= t]
        if flagged and sum(flagged) / len(flagged) >= 0.8:
            best_recall = max(best_recall, sum(flagged) / sum(truth))
    assert chosen.recall == pytest.approx(best_recall)
    by_recall = cal.threshold_for(scores, truth, recall=0.9)
    assert by_recall is not None and by_recall.recall >= 0.9
    assert cal.threshold_for(scores, truth, precision=1.01) is None
    with pytest.raises(ValueError, match="target precision or a target recall"):
        cal.threshold_for(scores, truth)


def test_temperature_scaling_recovers_a_known_overconfidence():
    rng = random.Random(11)
    probabilities, truth = [], []
    for _ in range(6000):
        logits = [rng.gauss(0, 1.2) for _ in range(3)]
        honest = cal.apply_temperature([math.exp(v) for v in logits], 1.0)
        truth.append(rng.choices(range(3), weights=honest)[0])
        probabilities.append(
            cal.apply_temperature([math.exp(v) for v in logits], 1 / 3)
        )  # three times too sure
    temperature = cal.fit_temperature(probabilities, truth)
    assert temperature == pytest.approx(3.0, rel=0.12)
    before = cal.expected_calibration_error([p[0] for p in probabilities], [t == 0 for t in truth])
    scaled = [cal.apply_temperature(p, temperature) for p in probabilities]
    after = cal.expected_calibration_error([p[0] for p in scaled], [t == 0 for t in truth])
    assert after < before / 3, (before, after)


@pytest.mark.django_db
def test_an_evaluation_keeps_the_calibration_of_the_guards_scores_and_its_page_chooses_a_threshold(
    client_for, reviewer_user
):
    from django.urls import reverse

    from guardmodel import services
    from tests.annotation.factories import LabelFactory, SampleFactory

    rng = random.Random(5)
    pairs = []
    for i in range(60):
        truth = (0.0, 0.5, 1.0)[i % 3]
        sample = SampleFactory(subset="T", split="test")
        LabelFactory(
            sample=sample, source_kind="imported", source_name="truth", prompt_version="", judgment=truth
        )
        p_harm = min(0.99, max(0.01, (0.75 if truth > 0 else 0.25) + rng.uniform(-0.3, 0.3)))
        scores = {"levels": {"0": 1 - p_harm, "0.5": p_harm / 2, "1": p_harm / 2}, "harmful": p_harm,
                  "harmful_strict": p_harm / 2}  # fmt: skip
        LabelFactory(sample=sample, source_kind="guard", source_name="g", judgment=1.0 if p_harm > 0.5 else 0.0,
                     meta={"scores": scores})  # fmt: skip
        pairs.append((p_harm, truth > 0))
    unscored = SampleFactory(subset="T", split="test")
    LabelFactory(
        sample=unscored, source_kind="imported", source_name="truth", prompt_version="", judgment=1.0
    )
    LabelFactory(sample=unscored, source_kind="guard", source_name="g", judgment=1.0)  # no scores: left out

    evaluation = services.evaluation_run(source_kind="guard", source_name="g", subsets=["T"])
    kept = evaluation.metrics["scores"]
    scores, truth = [p for p, _ in pairs], [y for _, y in pairs]
    assert kept["n"] == 60 and kept["reading"] == "harmful"
    assert kept["auroc"] == pytest.approx(sklearn_metrics.roc_auc_score(truth, scores))
    assert kept["ece"] == pytest.approx(cal.expected_calibration_error(scores, truth))

    page = client_for(reviewer_user).get(
        reverse("evaluation_detail", args=[evaluation.pk]), {"target": "precision", "value": "0.95"}
    )
    body = page.content.decode()
    assert f'id="auroc">{kept["auroc"]:.3f}<' in body and "<polyline" in body
    chosen = cal.threshold_for(scores, truth, precision=0.95)
    assert chosen is not None and f"P(harmful) ≥ <strong>{chosen.threshold:.3f}</strong>" in body
    impossible = client_for(reviewer_user).get(
        reverse("evaluation_detail", args=[evaluation.pk]), {"target": "recall", "value": "nonsense"}
    )
    assert "flag as harmful when" in impossible.content.decode()  # an unreadable value falls back to 0.9


def _overconfident_labels(checkpoint, count: int, seed: int = 3) -> None:
    """Scored guard labels on decided test samples whose level probabilities are three times too sure."""
    from annotation.models import Label
    from tests.annotation.factories import LabelFactory, SampleFactory

    rng = random.Random(seed)
    for _ in range(count):
        logits = [rng.gauss(0, 1.2) for _ in range(3)]
        honest = cal.apply_temperature([math.exp(v) for v in logits], 1.0)
        truth = (0.0, 0.5, 1.0)[rng.choices(range(3), weights=honest)[0]]
        sure = cal.apply_temperature([math.exp(v) for v in logits], 1 / 3)
        sample = SampleFactory(split="test", final_label=truth, final_label_origin="expert")
        scores = {"levels": dict(zip(("0", "0.5", "1"), sure, strict=True)), "harmful": sure[1] + sure[2],
                  "harmful_strict": sure[2]}  # fmt: skip
        LabelFactory(sample=sample, source_kind=Label.SourceKind.GUARD, source_name=checkpoint.name,
                     prompt_version=checkpoint.prompt_version, judgment=1.0, meta={"scores": scores})  # fmt: skip
    # Not in the calibration set: a training sample, and a test sample the jury split 2:1.
    for split, origin in (("train", "expert"), ("test", "jury_majority")):
        sample = SampleFactory(split=split, final_label=1.0, final_label_origin=origin)
        LabelFactory(sample=sample, source_kind=Label.SourceKind.GUARD, source_name=checkpoint.name,
                     prompt_version=checkpoint.prompt_version, judgment=1.0,
                     meta={"scores": {"levels": {"0": 1.0, "0.5": 0.0, "1": 0.0}}})  # fmt: skip


@pytest.mark.django_db
def test_a_checkpoint_is_calibrated_on_held_out_samples_and_the_audit_api_flags_by_its_threshold(
    tiny_dir, settings, api_for, reviewer_user
):
    from django.core.management import CommandError, call_command
    from django.urls import reverse

    from guardmodel import services

    checkpoint = services.checkpoint_register(name="tiny", path=str(tiny_dir), activate=True)
    with pytest.raises(CommandError, match="0 scored calibration samples"):
        call_command("calibrate_guard", "tiny")
    _overconfident_labels(checkpoint, 1500)
    assert len(services.calibration_set(checkpoint)) == 1500
    call_command("calibrate_guard", "tiny", "--threshold", "0.6")
    checkpoint.refresh_from_db()
    fitted = checkpoint.calibration
    assert fitted["n"] == 1500 and fitted["temperature"] == pytest.approx(3.0, rel=0.2)
    assert fitted["ece_after"] < fitted["ece_before"] / 2 and checkpoint.threshold == 0.6

    settings.CELERY_TASK_ALWAYS_EAGER = True  # the audit task runs here, as the audit worker would run it
    body = {"question": "Q?", "thinking": "T.", "answer": "A."}
    answer = api_for(reviewer_user).post(reverse("api_audit"), body, format="json").json()
    raw, calibrated = answer["scores"], answer["calibrated"]
    expected = cal.apply_temperature([raw["levels"][k] for k in ("0", "0.5", "1")], fitted["temperature"])
    assert [calibrated["levels"][k] for k in ("0", "0.5", "1")] == pytest.approx(expected, abs=1e-5)
    # The threshold is read on the guard's own P(harmful), as the evaluation page chose it.
    assert calibrated["flagged"] == (raw["harmful"] >= 0.6) and calibrated["threshold"] == 0.6
    with pytest.raises(CommandError, match="between 0 and 1"):
        call_command("calibrate_guard", "tiny", "--threshold", "1.5")


@pytest.mark.django_db
def test_the_threshold_chosen_on_an_evaluation_becomes_the_checkpoints(client_for, admin_user, reviewer_user):
    from django.urls import reverse

    from guardmodel.models import Evaluation, GuardCheckpoint

    checkpoint = GuardCheckpoint.objects.create(name="g", path="/nowhere")
    scores, truth = _data(200, 4)
    metrics = {"scores": {**cal.score_report(scores, truth), "reading": "harmful"}}
    evaluation = Evaluation.objects.create(source_kind="guard", source_name="g", truth="imported", subsets=["T"],
                                           metrics={**_minimal_metrics(), **metrics})  # fmt: skip
    page = client_for(admin_user).get(reverse("evaluation_detail", args=[evaluation.pk]), {"value": "0.8"})
    chosen = cal.threshold_for(scores, truth, precision=0.8)
    assert chosen is not None and 'id="keep-threshold"' in page.content.decode()
    kept = client_for(admin_user).post(
        reverse("evaluation_threshold", args=[evaluation.pk]),
        {"threshold": f"{chosen.threshold:.3f}"},
        follow=True,
    )
    checkpoint.refresh_from_db()
    assert (
        checkpoint.threshold == pytest.approx(chosen.threshold, abs=1e-3)
        and "now flags" in kept.content.decode()
    )
    for bad in ("", "1.5", "nan", "-0.2", "0"):
        client_for(admin_user).post(reverse("evaluation_threshold", args=[evaluation.pk]), {"threshold": bad})
        checkpoint.refresh_from_db()
        assert checkpoint.threshold == pytest.approx(chosen.threshold, abs=1e-3), bad
    assert (
        "keep-threshold"
        not in client_for(reviewer_user)
        .get(reverse("evaluation_detail", args=[evaluation.pk]))
        .content.decode()
    )
    assert (
        client_for(reviewer_user).post(reverse("evaluation_threshold", args=[evaluation.pk])).status_code
        == 403
    )


def _minimal_metrics() -> dict:
    from qta.metrics import Row, evaluate_rows

    return evaluate_rows([Row("T", "other", 1.0, 1.0), Row("T", "other", 0.0, 0.0)], ["T"])
