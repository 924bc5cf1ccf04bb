"""Agreement statistics against hand-computed values, and the report built from real queue data."""

from __future__ import annotations

import pytest

from experts.agreement import agreement_report, category_counts, fleiss_kappa, krippendorff_interval
from tests.annotation.factories import SampleFactory
from tests.experts.review_helpers import experts, jury_votes, label_next, split_items


def test_fleiss_kappa_matches_the_worked_example():
    # Fleiss (1971) as worked on Wikipedia: 10 subjects, 14 raters, 5 categories; P̄ = 0.378, P̄e = 0.213.
    table = [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
    assert fleiss_kappa(table) == pytest.approx(0.20993, abs=1e-4)


def test_fleiss_kappa_edges():
    assert fleiss_kappa([[3, 0, 0], [0, 3, 0]]) == pytest.approx(1.0)
    # Every rating the same value: chance agreement is already perfect, so κ is undefined.
    assert fleiss_kappa([[3, 0, 0], [3, 0, 0]]) is None
    assert fleiss_kappa([]) is None
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa([[3, 0, 0], [1, 1, 0]])


def test_krippendorff_interval_alpha_matches_a_hand_computation():
    # Units [0, 0, 1], [0.5, 0.5], [1, 1, 1] (and one single label, which has no pairs).
    # D_o = (1/n) Σ_u Σ_{i≠j} (v_i - v_j)² / (m_u - 1) = (4 / 2) / 8 = 0.25
    # D_e = Σ_{i≠j} (v_i - v_j)² / (n (n - 1)) = 2 (8 · 4.5 - 5²) / 56 = 22 / 56
    # α = 1 - D_o / D_e = 1 - 7/11 = 4/11
    counts = category_counts([[0, 0, 1], [0.5, 0.5], [1, 1, 1], [0]])
    assert counts[0] == [2, 0, 1]
    assert krippendorff_interval(counts) == pytest.approx(4 / 11)
    assert krippendorff_interval(category_counts([[1, 1], [1, 1]])) is None


@pytest.mark.django_db
def test_the_report_scores_experts_jurors_and_the_jury_majority(admin_user):
    e = experts(3)
    # Two 1:1:1 items (juror-a 0, juror-b 0.5, juror-c 1): experts say 0,0,0 and 1,1,0.5.
    split_items(2)
    for user, value in zip(e, (0.0, 0.0, 0.0), strict=True):
        label_next(user, value)
    for user, value in zip(e, (1.0, 1.0, 0.5), strict=True):
        label_next(user, value)
    # Two jury-labelled samples checked by experts: the jury said 1 (2:1) and 0 (3:0); experts said 1 and 1.
    checked = [SampleFactory(), SampleFactory()]
    jury_votes(checked[0], (1.0, 1.0, 0.0))
    jury_votes(checked[1], (0.0, 0.0, 0.0))
    from annotation.strata import stratify

    stratify(sample_ids=[s.pk for s in checked])
    from experts.services import expert_reliability_draw

    assert expert_reliability_draw(n=2, seed=1, user=admin_user) == 2
    for _ in checked:
        for user in e:
            label_next(user, 1.0)

    report = agreement_report(n=150, seed=0)
    assert (report.units, report.complete_units, report.experts, report.decided) == (4, 4, 3, 4)
    # Units: [0,0,0], [1,1,0.5], [1,1,1], [1,1,1] → P̄ = (1 + 1/3 + 1 + 1) / 4, p = (3, 1, 8) / 12.
    p_bar = (1 + 1 / 3 + 1 + 1) / 4
    p_e = (3 / 12) ** 2 + (1 / 12) ** 2 + (8 / 12) ** 2
    assert report.fleiss_kappa == pytest.approx((p_bar - p_e) / (1 - p_e))
    assert report.krippendorff_alpha == pytest.approx(
        krippendorff_interval([[3, 0, 0], [0, 1, 2], [0, 0, 3], [0, 0, 3]])
    )
    assert [(title, n) for title, n, _, _ in report.by_reason] == [
        ("Jury split 1:1:1", 2),
        ("Reliability check of the jury", 2),
    ]
    # Decisions: 0, 1, 1, 1. juror-a voted 0, 0, 1, 0; juror-c voted 1, 1, 0, 0.
    jurors = {j.name: j for j in report.jurors}
    assert (jurors["juror-a"].n, jurors["juror-a"].exact) == (4, 2)
    assert (jurors["juror-c"].exact, jurors["juror-c"].binary) == (1, 1)
    # Only the two checked samples have a jury majority: 1 vs expert 1 (right), 0 vs expert 1 (missed).
    assert (report.reliability_pool, report.reliability_n) == (2, 2)
    assert report.reliability["accuracy"] == pytest.approx(0.5)
    assert report.reliability["f1"] == pytest.approx(2 / 3)  # tp 1, fn 1, fp 0
    assert report.reliability_exact == pytest.approx(0.5)
    assert agreement_report(n=1, seed=3).reliability_n == 1


@pytest.mark.django_db
def test_an_open_round_stays_out_of_the_statistics_so_a_voter_learns_nothing():
    """K = 3: after two of three experts voted, the first must not see a unit appear (or α move) and so learn
    whether the second agreed; once the third vote decides the item, it counts."""
    (item,) = split_items(1)
    e = experts(3)
    label_next(e[0], 1.0)
    label_next(e[1], 0.0)
    open_round = agreement_report()
    assert (open_round.units, open_round.experts, open_round.krippendorff_alpha) == (0, 0, None)
    label_next(e[2], 0.0)
    item.refresh_from_db()
    assert item.decided_by == "majority"
    decided = agreement_report()
    assert (decided.units, decided.complete_units, decided.experts) == (1, 1, 3)
