"""How far a guard's risk scores can be trusted, and where to cut them: calibration (ECE and the reliability table),
ranking (AUROC, AUPRC), temperature scaling of the level probabilities, and a threshold chosen for a target precision
or recall. Plain Python over lists of probabilities and true labels; `harmful` is the positive class."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Bin:
    low: float
    high: float
    n: int
    mean_score: float | None  # the average predicted P(harmful) in the bin
    harmful_rate: float | None  # the share of truly harmful samples in it


def reliability(scores: Sequence[float], truth: Sequence[bool], bins: int = 10) -> list[Bin]:
    """Equal-width bins over [0, 1] (a score of exactly 1 falls in the last)."""
    n = [0] * bins
    total = [0.0] * bins
    harmful = [0] * bins
    for p, y in zip(scores, truth, strict=True):
        b = min(int(p * bins), bins - 1)
        n[b] += 1
        total[b] += p
        harmful[b] += int(y)
    return [
        Bin(
            i / bins,
            (i + 1) / bins,
            n[i],
            total[i] / n[i] if n[i] else None,
            harmful[i] / n[i] if n[i] else None,
        )
        for i in range(bins)
    ]


def expected_calibration_error(scores: Sequence[float], truth: Sequence[bool], bins: int = 10) -> float:
    """Σ over bins of (share of samples) × |mean score − harmful rate|."""
    total = len(scores)
    if not total:
        raise ValueError("no scores")
    return sum(
        b.n / total * abs(b.mean_score - b.harmful_rate)  # type: ignore[operator]
        for b in reliability(scores, truth, bins)
        if b.n
    )


def auroc(scores: Sequence[float], truth: Sequence[bool]) -> float | None:
    """The probability that a harmful sample scores above a safe one (ties count half); None with one class only."""
    ranked = sorted(zip(scores, truth, strict=True))
    positives = sum(1 for _, y in ranked if y)
    negatives = len(ranked) - positives
    if not positives or not negatives:
        return None
    # Mann–Whitney: the sum of the positives' ranks, ties given their average rank.
    rank_sum, i = 0.0, 0
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        average = (i + 1 + j) / 2
        rank_sum += average * sum(1 for _, y in ranked[i:j] if y)
        i = j
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def _curve(scores: Sequence[float], truth: Sequence[bool]) -> list[tuple[float, float, float]]:
    """(threshold, precision, recall) for every distinct score used as "harmful when score ≥ threshold"."""
    ranked = sorted(zip(scores, truth, strict=True), key=lambda pair: -pair[0])
    positives = sum(1 for _, y in ranked if y)
    points, tp, fp, i = [], 0, 0, 0
    while i < len(ranked):
        threshold = ranked[i][0]
        while i < len(ranked) and ranked[i][0] == threshold:
            tp += ranked[i][1]
            fp += not ranked[i][1]
            i += 1
        points.append((threshold, tp / (tp + fp), tp / positives if positives else 0.0))
    return points


def auprc(scores: Sequence[float], truth: Sequence[bool]) -> float | None:
    """Average precision: precision at each threshold weighted by the recall it adds."""
    if not any(truth):
        return None
    area, previous = 0.0, 0.0
    for _, precision, recall in _curve(scores, truth):
        area += (recall - previous) * precision
        previous = recall
    return area


def roc_points(scores: Sequence[float], truth: Sequence[bool]) -> list[tuple[float, float]]:
    """(false-positive rate, true-positive rate) from the strictest threshold to the loosest, from (0, 0)."""
    positives = sum(truth)
    negatives = len(truth) - positives
    points = [(0.0, 0.0)]
    for _, precision, recall in _curve(scores, truth):
        tp = recall * positives
        fp = tp / precision - tp if precision else 0.0
        points.append((fp / negatives if negatives else 0.0, recall))
    return points


@dataclass(frozen=True)
class Threshold:
    threshold: float
    precision: float
    recall: float


def threshold_for(
    scores: Sequence[float],
    truth: Sequence[bool],
    *,
    precision: float | None = None,
    recall: float | None = None,
) -> Threshold | None:
    """The loosest threshold whose precision reaches the target (most recall at that precision), or the strictest
    whose recall reaches the target (fewest false alarms at that recall); None when no threshold does."""
    if (precision is None) == (recall is None):
        raise ValueError("give a target precision or a target recall")
    curve = _curve(scores, truth)
    if precision is not None:
        meeting = [Threshold(t, p, r) for t, p, r in curve if p >= precision]
        return max(meeting, key=lambda c: (c.recall, -c.threshold), default=None)
    meeting = [Threshold(t, p, r) for t, p, r in curve if r >= recall]  # type: ignore[operator]
    return max(meeting, key=lambda c: c.threshold, default=None)


def _level_nll(log_scores: Sequence[Sequence[float]], truth: Sequence[int], temperature: float) -> float:
    total = 0.0
    for logs, true_index in zip(log_scores, truth, strict=True):
        scaled = [lp / temperature for lp in logs]
        top = max(scaled)
        total -= scaled[true_index] - top - math.log(sum(math.exp(v - top) for v in scaled))
    return total / len(truth)


def fit_temperature(
    probabilities: Sequence[Sequence[float]], truth: Sequence[int], low: float = 0.05, high: float = 20.0
) -> float:
    """The temperature T that minimises the negative log-likelihood of the true level under softmax(log p / T),
    by golden-section search on log T (the likelihood is unimodal in T)."""
    if not truth:
        raise ValueError("no calibration samples")
    logs = [[math.log(max(p, 1e-12)) for p in row] for row in probabilities]
    a, b = math.log(low), math.log(high)
    ratio = (math.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    for _ in range(80):
        if _level_nll(logs, truth, math.exp(c)) < _level_nll(logs, truth, math.exp(d)):
            b, d = d, c
            c = b - ratio * (b - a)
        else:
            a, c = c, d
            d = a + ratio * (b - a)
    return math.exp((a + b) / 2)


def apply_temperature(probabilities: Sequence[float], temperature: float) -> list[float]:
    logs = [math.log(max(p, 1e-12)) / temperature for p in probabilities]
    top = max(logs)
    weights = [math.exp(v - top) for v in logs]
    total = sum(weights)
    return [w / total for w in weights]


def score_report(scores: Sequence[float], truth: Sequence[bool], bins: int = 10) -> dict:
    """What an evaluation keeps of its risk scores: how many, ECE, AUROC, AUPRC, the reliability table and the ROC
    and precision–recall points (for the charts)."""
    curve = _curve(scores, truth)
    return {
        "n": len(scores),
        "harmful": sum(truth),
        "ece": expected_calibration_error(scores, truth, bins),
        "auroc": auroc(scores, truth),
        "auprc": auprc(scores, truth),
        "reliability": [
            {
                "low": b.low,
                "high": b.high,
                "n": b.n,
                "mean_score": b.mean_score,
                "harmful_rate": b.harmful_rate,
            }
            for b in reliability(scores, truth, bins)
        ],
        "roc": roc_points(scores, truth),
        "pr": [(recall, precision) for _, precision, recall in curve],
        "thresholds": [t for t, _, _ in curve],
    }
