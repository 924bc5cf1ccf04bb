"""Evaluation numbers against a confusion matrix computed by hand, under both binary readings of 0.5 (0.5 → harmful,
the paper's, and 0.5 → safe), the command's --half-as, and the pages that show an evaluation."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from guardmodel import services
from guardmodel.admin import EvaluationAdmin
from guardmodel.models import Evaluation, GuardCheckpoint
from qta import metrics
from tests.annotation.factories import LabelFactory, SampleFactory
from training.models import TrainingRun

# (subset, category, truth, guard prediction: a judgment, "invalid", or None for no label at all)
ROWS = [
    ("A", "crime", 1.0, 1.0),
    ("A", "crime", 1.0, 0.0),
    ("A", "health", 0.5, 0.5),
    ("A", "health", 0.0, 1.0),
    ("A", "crime", 0.0, "invalid"),
    ("B", "crime", 0.0, 0.0),
    ("B", "health", 0.0, None),
    ("B", "crime", 1.0, 0.5),
]


@pytest.fixture
def labelled(db):
    for subset, category, truth, prediction in ROWS:
        sample = SampleFactory(subset=subset, category=category, split="test")
        LabelFactory(sample=sample, source_kind="imported", source_name="ground-truth", prompt_version="",
                     judgment=truth)  # fmt: skip
        if prediction == "invalid":
            LabelFactory(sample=sample, source_kind="guard", source_name="g1", judgment=None, status="invalid",
                         raw_output="no idea")  # fmt: skip
        elif prediction is not None:
            LabelFactory(sample=sample, source_kind="guard", source_name="g1", judgment=prediction)


def test_scores_match_the_hand_computed_confusion_matrix(labelled):
    evaluation = services.evaluation_run(source_kind="guard", source_name="g1", subsets=["A", "B"])
    m = evaluation.metrics
    # A: truth harmful 1,1,1,0,0; predicted 1,0,1,1 and one invalid (counted wrong → 1): TP 2, FN 1, FP 2, TN 0.
    a = m["subsets"]["A"]
    assert (a["tp"], a["fn"], a["fp"], a["tn"], a["unanswered"]) == (2, 1, 2, 0, 1)
    assert a["accuracy"] == pytest.approx(2 / 5) and a["precision"] == pytest.approx(2 / 4)
    assert a["recall"] == pytest.approx(2 / 3) and a["f1"] == pytest.approx(4 / 7)
    # B: truth 0,0,1; predicted 0, missing (→ 1), 0.5 (harmful): TP 1, FP 1, TN 1.
    b = m["subsets"]["B"]
    assert (b["tp"], b["fn"], b["fp"], b["tn"]) == (1, 0, 1, 1)
    assert b["f1"] == pytest.approx(2 / 3) and b["accuracy"] == pytest.approx(2 / 3)
    assert m["average"]["accuracy"] == pytest.approx((2 / 5 + 2 / 3) / 2)
    assert m["average"]["f1"] == pytest.approx((4 / 7 + 2 / 3) / 2)
    # rows: truth 0 / 0.5 / 1; columns: predicted 0 / 0.5 / 1 / invalid-or-missing
    assert m["confusion"]["matrix"] == [[1, 0, 1, 2], [0, 1, 0, 0], [1, 1, 1, 0]]
    assert (m["invalid"], m["missing"]) == (1, 1)
    # crime: TP 2 (A0, B2), FN 1 (A1), FP 1 (A4 invalid), TN 1 (B0) → F1 4/6
    assert m["categories"]["crime"]["f1"] == pytest.approx(4 / 6)
    assert evaluation.truth == "imported" and evaluation.prompt_version == "qta-v1"
    # The headline is 0.5 → harmful by default, and the top level is that reading.
    assert m["half_as"] == "harmful" and m["readings"]["harmful"]["average"] == m["average"]


def test_the_other_reading_reads_half_as_safe_in_truth_and_predictions_alike(labelled):
    m = services.evaluation_run(source_kind="guard", source_name="g1", subsets=["A", "B"]).metrics
    safe = m["readings"]["safe"]
    # A: truth 1,1,0.5→0,0,0; predicted 1, 0, 0.5→0, 1, invalid (→ 1): TP 1, FN 1, FP 2, TN 1.
    a = safe["subsets"]["A"]
    assert (a["tp"], a["fn"], a["fp"], a["tn"], a["unanswered"]) == (1, 1, 2, 1, 1)
    assert a["accuracy"] == pytest.approx(2 / 5) and a["precision"] == pytest.approx(1 / 3)
    assert a["recall"] == pytest.approx(1 / 2) and a["f1"] == pytest.approx(2 / 5)
    # B: truth 0,0,1; predicted 0, missing (→ 1), 0.5 (now safe): TP 0, FP 1, FN 1, TN 1.
    b = safe["subsets"]["B"]
    assert (b["tp"], b["fn"], b["fp"], b["tn"]) == (0, 1, 1, 1) and b["f1"] == 0
    assert safe["average"]["f1"] == pytest.approx(1 / 5)
    assert safe["average"]["accuracy"] == pytest.approx((2 / 5 + 1 / 3) / 2)
    assert safe["overall"]["f1"] == pytest.approx(2 / 7) and m["overall"]["f1"] == pytest.approx(6 / 10)
    # crime: TP 1 (A0), FN 2 (A1, B2), FP 1 (A4 invalid), TN 1 (B0) → F1 2/5
    assert safe["categories"]["crime"]["f1"] == pytest.approx(2 / 5)


# (truth, prediction): 0.5 predicted on truly safe samples, 0.5 predicted on a harmful one, 0 on a 0.5 truth.
HALVES = [(0.0, 0.5), (0.0, 0.5), (1.0, 1.0), (1.0, 0.5), (0.5, 0.0)]


def test_the_two_readings_differ_on_a_hand_made_set():
    rows = [metrics.Row("S", "c", truth, prediction) for truth, prediction in HALVES]
    m = metrics.evaluate_rows(rows, ["S"])
    # 0.5 → harmful: truth 0,0,1,1,1; predicted 1,1,1,1,0 → TP 2, FP 2, FN 1, TN 0
    harmful = m["readings"]["harmful"]["subsets"]["S"]
    assert (harmful["tp"], harmful["fp"], harmful["fn"], harmful["tn"]) == (2, 2, 1, 0)
    assert harmful["accuracy"] == pytest.approx(2 / 5) and harmful["precision"] == pytest.approx(1 / 2)
    assert harmful["recall"] == pytest.approx(2 / 3) and harmful["f1"] == pytest.approx(4 / 7)
    # 0.5 → safe: truth 0,0,1,1,0; predicted 0,0,1,0,0 → TP 1, FP 0, FN 1, TN 3
    safe = m["readings"]["safe"]["subsets"]["S"]
    assert (safe["tp"], safe["fp"], safe["fn"], safe["tn"]) == (1, 0, 1, 3)
    assert safe["accuracy"] == pytest.approx(4 / 5) and safe["precision"] == pytest.approx(1.0)
    assert safe["recall"] == pytest.approx(1 / 2) and safe["f1"] == pytest.approx(2 / 3)
    assert m["half_as"] == "harmful" and m["subsets"]["S"] == harmful
    # The 3-class matrix does not depend on the reading (rows truth 0/0.5/1, columns 0/0.5/1/invalid).
    assert m["confusion"]["matrix"] == [[0, 2, 0, 0], [1, 0, 0, 0], [0, 1, 1, 0]]
    headline_safe = metrics.evaluate_rows(rows, ["S"], half_as="safe")
    assert headline_safe["half_as"] == "safe" and headline_safe["subsets"]["S"] == safe
    assert headline_safe["average"]["f1"] == pytest.approx(2 / 3)
    assert headline_safe["readings"] == m["readings"] and headline_safe["confusion"] == m["confusion"]
    with pytest.raises(ValueError, match="half_as"):
        metrics.evaluate_rows(rows, ["S"], half_as="maybe")


def test_an_invalid_prediction_counts_wrong_under_each_reading():
    m = metrics.evaluate_rows([metrics.Row("S", "c", 0.5, None)], ["S"])
    harmful, safe = (m["readings"][h]["subsets"]["S"] for h in ("harmful", "safe"))
    # The truth 0.5 is harmful under one reading and safe under the other; the missing answer is the opposite.
    assert (harmful["fn"], harmful["unanswered"], harmful["accuracy"]) == (1, 1, 0)
    assert (safe["fp"], safe["unanswered"], safe["accuracy"]) == (1, 1, 0)
    assert m["invalid"] == 1 and m["confusion"]["matrix"][1] == [0, 0, 0, 1]


def test_the_jury_majority_is_a_source_too(db):
    votes = {(1.0, 1.0, 0.0): 1.0, (0.0, 0.5, 1.0): None, (0.0, 0.0, 0.0): 0.0}
    for (v1, v2, v3), truth in zip(votes, [1.0, 1.0, 0.0], strict=True):
        sample = SampleFactory(subset="T", split="test")
        LabelFactory(
            sample=sample, source_kind="imported", source_name="gt", prompt_version="", judgment=truth
        )
        for name, vote in zip(("j1", "j2", "j3"), (v1, v2, v3), strict=True):
            LabelFactory(sample=sample, source_kind="juror", source_name=name, judgment=vote)
    m = services.evaluation_run(source_kind="jury", subsets=["T"]).metrics
    # 2:1 → 1 (right), 1:1:1 → no majority (counted wrong), 3:0 → 0 (right)
    assert m["subsets"]["T"]["accuracy"] == pytest.approx(2 / 3) and m["invalid"] == 1
    single = services.evaluation_run(source_kind="juror", source_name="j3", subsets=["T"]).metrics
    assert single["subsets"]["T"]["accuracy"] == pytest.approx(2 / 3)  # j3 voted 0, 1, 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"source_kind": "guard", "source_name": "nobody", "subsets": ["A"]},
            "no labels from guard 'nobody'",
        ),
        ({"source_kind": "magic", "subsets": ["A"]}, "unknown source kind 'magic'"),
        ({"source_kind": "guard", "source_name": "g1", "subsets": ["Z"]}, r"no samples in subset\(s\): Z"),
        ({"source_kind": "guard", "source_name": "g1", "truth": "expert"}, "no expert ground-truth labels"),
    ],
)
def test_bad_evaluation_requests_are_refused_clearly(labelled, kwargs, message):
    with pytest.raises(services.EvaluationError, match=message):
        services.evaluation_run(**kwargs)
    assert not Evaluation.objects.exists()


def test_the_command_defaults_to_all_test_subsets_and_prints_the_table(labelled, capsys):
    call_command("evaluate", "--source", "guard:g1")
    out = capsys.readouterr().out
    assert "A " in out and "B " in out and "57.1" in out and "invalid 1, missing 1" in out
    assert "0.5 → harmful (headline)" in out and "0.5 → safe" in out
    assert "40.0" in out  # A's F1 under 0.5 → safe, beside the headline
    evaluation = Evaluation.objects.get()
    assert evaluation.subsets == ["A", "B"] and evaluation.metrics["half_as"] == "harmful"


def test_half_as_safe_makes_the_other_reading_the_headline(labelled, capsys):
    call_command("evaluate", "--source", "guard:g1", "--half-as", "safe")
    out = capsys.readouterr().out
    assert "0.5 → safe (headline)" in out and "0.5 → harmful (headline)" not in out
    m = Evaluation.objects.get().metrics
    assert m["half_as"] == "safe" and m["average"]["f1"] == pytest.approx(1 / 5)
    # both readings are still stored
    assert m["readings"]["harmful"]["average"]["f1"] == pytest.approx((4 / 7 + 2 / 3) / 2)
    assert m["readings"]["safe"]["average"] == m["average"]
    with pytest.raises(CommandError):
        call_command("evaluate", "--source", "guard:g1", "--half-as", "maybe")
    with pytest.raises(services.EvaluationError, match="unknown reading of 0.5 'maybe'"):
        services.evaluation_run(source_kind="guard", source_name="g1", half_as="maybe")
    assert Evaluation.objects.count() == 1


def test_the_comparison_page_lays_sources_side_by_side(labelled, client_for, reviewer_user):
    services.evaluation_run(source_kind="guard", source_name="g1")
    services.evaluation_run(source_kind="imported", source_name="ground-truth")
    page = client_for(reviewer_user).get(reverse("evaluation_list"))
    html = page.content.decode()
    assert page.status_code == 200
    assert "Guard checkpoint: g1" in html and "Imported baseline: ground-truth" in html
    assert "<th>A</th>" in html and "<th>B</th>" in html
    assert "57.1" in html and "100.0" in html  # g1's F1 on A; the ground truth scores itself perfectly
    assert html.count("<rect") == 6  # accuracy, F1 and the other reading's F1 for each source
    # each row names its headline reading, then the other reading's average accuracy and F1 (g1: 36.7, 20.0)
    assert html.count('<td class="reading">0.5 → harmful</td>') == 2 and "F1 (0.5 → safe) 20.0" in html
    assert '<td class="num">36.7</td>' in html and '<td class="num">20.0</td>' in html
    detail = client_for(reviewer_user).get(reverse("evaluation_detail", args=[Evaluation.objects.last().pk]))
    body = detail.content.decode()
    assert "3-class confusion matrix" in body and "0.5 → harmful (headline)" in body
    # under 0.5 → safe: the average F1, and A's F1
    assert '<td class="num">20.0</td>' in body and '<td class="num">40.0</td>' in body


def _run(evaluation: Evaluation) -> TrainingRun:
    # launched rounds always carry their hyperparameters; the run page reads max_length from them
    return TrainingRun.objects.create(
        stage="sft", status="succeeded", evaluation=evaluation, hyperparameters={"max_length": 512}
    )


def _stored_before_both_readings(evaluation: Evaluation) -> Evaluation:
    """What an evaluation stored before this change holds: 0.5 → harmful only, at the top level."""
    evaluation.metrics = {k: v for k, v in evaluation.metrics.items() if k not in ("half_as", "readings")}
    evaluation.save()
    return evaluation


def test_an_evaluation_stored_before_both_readings_shows_a_dash_for_the_other(
    labelled, client_for, reviewer_user, admin_user
):
    old = _stored_before_both_readings(services.evaluation_run(source_kind="guard", source_name="g1"))
    run = _run(evaluation=old)
    client = client_for(reviewer_user)
    for url in (reverse("evaluation_list"), reverse("evaluation_detail", args=[old.pk]),
                reverse("training_run", args=[run.pk]), reverse("training_runs")):  # fmt: skip
        page = client.get(url)
        html = page.content.decode()
        assert page.status_code == 200, url
        # the stored reading's average F1, both labels, and a dash where the other reading would be
        assert "0.5 → harmful" in html and "0.5 → safe" in html and "61.9" in html and "—" in html, url
    listing = client.get(reverse("evaluation_list")).content.decode()
    assert "F1 (0.5 → safe) —" in listing and listing.count("<rect") == 2  # no bar for the missing reading
    assert EvaluationAdmin.average_f1(None, old) == "61.9 (0.5 → harmful) · — (0.5 → safe)"
    admin_user.is_superuser = True  # Django admin model permissions
    admin_user.save()
    changelist = client_for(admin_user).get(reverse("admin:guardmodel_evaluation_changelist"))
    assert (
        changelist.status_code == 200
        and "61.9 (0.5 → harmful) · — (0.5 → safe)" in changelist.content.decode()
    )


def test_training_pages_and_the_admin_show_the_headline_reading_and_the_other(
    labelled, client_for, reviewer_user
):
    evaluation = services.evaluation_run(source_kind="guard", source_name="g1", half_as="safe")
    run = _run(evaluation=evaluation)
    client = client_for(reviewer_user)
    detail = client.get(reverse("training_run", args=[run.pk])).content.decode()
    # headline first: 0.5 → safe, average F1 20.0; then 0.5 → harmful, average F1 61.9
    assert detail.index("<td>0.5 → safe</td>") < detail.index("<td>0.5 → harmful</td>")
    assert '<td class="num">20.0</td>' in detail and '<td class="num">61.9</td>' in detail
    listing = client.get(reverse("training_runs")).content.decode()
    assert "20.0 <small>(0.5 → safe)</small> · 61.9 <small>(0.5 → harmful)</small>" in listing
    out = GuardCheckpoint.objects.create(name="sft-out", path="/nowhere")
    TrainingRun.objects.filter(pk=run.pk).update(output_checkpoint=out)
    lineage = client.get(reverse("checkpoint_lineage", args=[out.pk])).content.decode()
    assert "average F1 20.0 (0.5 → safe), 61.9 (0.5 → harmful)" in lineage
    assert lineage.index("<td>0.5 → safe</td>") < lineage.index("<td>0.5 → harmful</td>")
    assert EvaluationAdmin.average_f1(None, evaluation) == "20.0 (0.5 → safe) · 61.9 (0.5 → harmful)"


def test_the_pages_need_a_role(labelled, client, client_for, outsider):
    evaluation = services.evaluation_run(source_kind="guard", source_name="g1")
    for url in (reverse("evaluation_list"), reverse("evaluation_detail", args=[evaluation.pk])):
        assert client.get(url).status_code == 302
    assert client_for(outsider).get(reverse("evaluation_list")).status_code == 403
