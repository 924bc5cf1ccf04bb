"""Agreement among experts, and between the jury and the experts (the agreement page).

- Fleiss' κ among experts over the units (item × review round) where all K labels are in, the three judgments as
  nominal categories (the paper reports 0.74 on ambiguous cases);
- Krippendorff's α with the interval metric, which credits 0 vs 0.5 as closer than 0 vs 1 and allows units with
  any number of labels (the `krippendorff` package);
- each juror's agreement with the experts' decisions;
- the paper's annotation-reliability check: the jury majority's accuracy and F1 against expert decisions on a
  random sample of N decided items that have a jury majority (95.33% / 92.79% on 150 items in the paper).
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

import krippendorff
import numpy as np

from annotation.models import Label
from annotation.strata import jury_prompt_version, majority
from experts.models import ExpertQueueItem, ReviewStatus
from qta.metrics import binary_scores
from qta.protocol import JUDGMENTS, is_harmful

_COLUMN = {value: i for i, value in enumerate(JUDGMENTS)}


def category_counts(units: Sequence[Sequence[float]]) -> list[list[int]]:
    """Per unit, how many labels gave each judgment (0, 0.5, 1)."""
    counts = []
    for values in units:
        row = [0] * len(JUDGMENTS)
        for value in values:
            row[_COLUMN[value]] += 1
        counts.append(row)
    return counts


def fleiss_kappa(counts: Sequence[Sequence[int]]) -> float | None:
    """Fleiss' κ for units that each have the same number of ratings n ≥ 2; None when undefined (no units, or
    every rating in one category, where chance agreement is already perfect)."""
    if not counts:
        return None
    n = sum(counts[0])
    if n < 2 or any(sum(row) != n for row in counts):
        raise ValueError("Fleiss' kappa needs the same number (at least 2) of ratings per unit")
    units = len(counts)
    # P_i: the share of agreeing rater pairs in unit i; p_j: the share of all ratings in category j.
    agreement = sum((sum(c * c for c in row) - n) / (n * (n - 1)) for row in counts) / units
    shares = [sum(row[j] for row in counts) / (units * n) for j in range(len(counts[0]))]
    chance = sum(p * p for p in shares)
    if chance >= 1.0:
        return None
    return (agreement - chance) / (1.0 - chance)


def krippendorff_interval(counts: Sequence[Sequence[int]]) -> float | None:
    """Krippendorff's α (interval metric on 0 / 0.5 / 1) from per-unit category counts; units with fewer than two
    labels carry no pairs and are ignored. None when undefined (fewer than two pairable labels, or no variation)."""
    pairable = [row for row in counts if sum(row) >= 2]
    values = {j for row in pairable for j, c in enumerate(row) if c}
    if not pairable or len(values) < 2:
        return None
    return float(
        krippendorff.alpha(
            value_counts=np.array(pairable, dtype=float),
            value_domain=list(JUDGMENTS),
            level_of_measurement="interval",
        )
    )


@dataclass
class JurorAgreement:
    name: str
    n: int = 0
    exact: int = 0
    binary: int = 0
    unanswered: int = 0

    @property
    def exact_rate(self) -> float | None:
        return self.exact / self.n if self.n else None

    @property
    def binary_rate(self) -> float | None:
        return self.binary / self.n if self.n else None


@dataclass
class AgreementReport:
    units: int = 0  # item × round with at least two expert labels
    complete_units: int = 0  # ... with all K labels in (the units Fleiss' κ uses)
    experts: int = 0
    fleiss_kappa: float | None = None
    krippendorff_alpha: float | None = None
    by_reason: list[tuple[str, int, float | None, float | None]] = field(default_factory=list)
    decided: int = 0
    jurors: list[JurorAgreement] = field(default_factory=list)
    reliability_pool: int = 0  # decided items with a jury majority
    reliability_n: int = 0
    reliability_seed: int = 0
    reliability: dict | None = None
    reliability_exact: float | None = None


def _expert_units() -> tuple[dict[tuple[int, int], list[float]], dict[int, tuple[str, int]], set[int]]:
    """Expert judgments per (item, round) of rounds that are over — the item was decided, or moved on to a later
    round — each item's (reason, K), and the experts seen. A round still open is left out: its statistics would tell
    an expert who already voted whether the others agreed, and bias the votes still to come."""
    units: dict[tuple[int, int], list[float]] = defaultdict(list)
    experts: set[int] = set()
    rows = Label.objects.filter(
        source_kind=Label.SourceKind.EXPERT, status=Label.Status.VALID, expert_slot__isnull=False
    ).values_list("expert_slot__item_id", "expert_slot__round", "judgment", "created_by_id")
    state = {
        pk: (reason, needed, current, bool(decided_by))
        for pk, reason, needed, current, decided_by in ExpertQueueItem.objects.values_list(
            "pk", "reason", "labels_needed", "round", "decided_by"
        )
    }
    for item_id, review_round, judgment, user_id in rows.iterator(chunk_size=5000):
        _, _, current, decided = state[item_id]
        if decided or review_round < current:
            units[(item_id, review_round)].append(cast(float, judgment))  # valid labels always have one
            experts.add(user_id)
    items = {pk: (reason, needed) for pk, (reason, needed, _, _) in state.items()}
    return units, items, experts


def _expert_statistics(report: AgreementReport) -> None:
    units, items, experts = _expert_units()
    report.experts = len(experts - {None})
    pairable = {key: values for key, values in units.items() if len(values) >= 2}
    complete = {key: values for key, values in pairable.items() if len(values) == items[key[0]][1]}
    report.units, report.complete_units = len(pairable), len(complete)

    def kappa(selected: dict[tuple[int, int], list[float]]) -> float | None:
        # Fleiss' κ needs one n: use the units with the most common K.
        by_size: dict[int, list[list[float]]] = defaultdict(list)
        for values in selected.values():
            by_size[len(values)].append(values)
        if not by_size:
            return None
        size = max(by_size, key=lambda k: len(by_size[k]))
        return fleiss_kappa(category_counts(by_size[size]))

    report.fleiss_kappa = kappa(complete)
    report.krippendorff_alpha = krippendorff_interval(category_counts(list(pairable.values())))
    for reason, title in ExpertQueueItem.Reason.choices:
        mine = {key: values for key, values in complete.items() if items[key[0]][0] == reason}
        if mine:
            alpha = krippendorff_interval(category_counts(list(mine.values())))
            report.by_reason.append((title, len(mine), kappa(mine), alpha))


def _jury_statistics(report: AgreementReport, *, n: int, seed: int) -> None:
    decided = dict(
        ExpertQueueItem.objects.filter(status=ReviewStatus.DONE).values_list("sample_id", "decision")
    )
    report.decided = len(decided)
    votes: dict[int, dict[str, float | None]] = defaultdict(dict)
    rows = Label.objects.filter(
        source_kind=Label.SourceKind.JUROR,
        prompt_version=jury_prompt_version(),
        sample__expert_queue_item__status=ReviewStatus.DONE,
    ).values_list("sample_id", "source_name", "judgment")
    for sample_id, juror, judgment in rows.iterator(chunk_size=5000):
        votes[sample_id][juror] = judgment
    jurors: dict[str, JurorAgreement] = {}
    with_majority: list[tuple[int, float]] = []
    for sample_id, truth in sorted(decided.items()):
        for juror, judgment in votes.get(sample_id, {}).items():
            score = jurors.setdefault(juror, JurorAgreement(juror))
            score.n += 1
            if judgment is None:
                score.unanswered += 1
                continue
            score.exact += judgment == truth
            score.binary += is_harmful(judgment) == is_harmful(truth)  # type: ignore[arg-type]
        valid = [j for j in votes.get(sample_id, {}).values() if j is not None]
        if len(valid) == 3 and (value := majority(valid)) is not None:
            with_majority.append((sample_id, value))
    report.jurors = sorted(jurors.values(), key=lambda j: j.name)
    report.reliability_pool = len(with_majority)
    drawn = random.Random(seed).sample(with_majority, min(n, len(with_majority)))
    report.reliability_n, report.reliability_seed = len(drawn), seed
    if drawn:
        report.reliability = binary_scores(
            (is_harmful(decided[sample_id]), is_harmful(value))  # type: ignore[arg-type]
            for sample_id, value in drawn
        )
        report.reliability_exact = sum(decided[s] == v for s, v in drawn) / len(drawn)


def agreement_report(*, n: int = 150, seed: int = 0) -> AgreementReport:
    report = AgreementReport()
    _expert_statistics(report)
    _jury_statistics(report, n=n, seed=seed)
    return report
