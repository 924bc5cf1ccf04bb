"""Evaluation numbers against a confusion matrix computed by hand, and the comparison page."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.urls import reverse

from guardmodel import services
from guardmodel.models import Evaluation
from tests.annotation.factories import LabelFactory, SampleFactory

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
    assert Evaluation.objects.get().subsets == ["A", "B"]


def test_the_comparison_page_lays_sources_side_by_side(labelled, client_for, reviewer_user):
    services.evaluation_run(source_kind="guard", source_name="g1")
    services.evaluation_run(source_kind="imported", source_name="ground-truth")
    page = client_for(reviewer_user).get(reverse("evaluation_list"))
    html = page.content.decode()
    assert page.status_code == 200
    assert "Guard checkpoint: g1" in html and "Imported baseline: ground-truth" in html
    assert "<th>A</th>" in html and "<th>B</th>" in html
    assert "57.1" in html and "100.0" in html  # g1's F1 on A; the ground truth scores itself perfectly
    assert html.count("<rect") == 4  # accuracy and F1 bars for each source
    detail = client_for(reviewer_user).get(reverse("evaluation_detail", args=[Evaluation.objects.last().pk]))
    assert "3-class confusion matrix" in detail.content.decode()


def test_the_pages_need_a_role(labelled, client, client_for, outsider):
    evaluation = services.evaluation_run(source_kind="guard", source_name="g1")
    for url in (reverse("evaluation_list"), reverse("evaluation_detail", args=[evaluation.pk])):
        assert client.get(url).status_code == 302
    assert client_for(outsider).get(reverse("evaluation_list")).status_code == 403
