"""Strata: what the jury's split of a sample means, kept right by every writer of labels.

From a sample's labels (the jury's, asked with one template; experts'; those that came with the data) this module
derives its stratum (D3:0 / D2:1 / D1:1:1 / incomplete / unlabelled), its final training label and that label's
origin (the rules in DESIGN.md "Stratification"), the D2:1 sample's DPO pair (chosen: a majority juror's label,
rejected: the minority juror's), and tells the expert desk (the experts app) which samples split 1:1:1. `stratify` does all of it for a set of
samples in one transaction per batch; every path that writes labels — an import, `POST /api/v1/labels`, the jury, an
expert's decision — ends with it, so nothing waits for a manual `manage.py stratify`. Every step is idempotent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from django.db import transaction
from django.db.models import QuerySet

from annotation.models import Label, LabelOrigin, PreferencePair, Sample, Stratum
from qta.protocol import PROMPT_VERSION

BATCH = 1000
_jury_version: Callable[[], str] = PROMPT_VERSION.__str__  # until the jury app says how to read it


def jury_version_source(source: Callable[[], str]) -> None:
    """Say how to read the template the sitting jury asks with; the jury app does, when it loads (this layer
    cannot know who sits)."""
    global _jury_version
    _jury_version = source


def jury_prompt_version() -> str:
    """The template version the sitting jury asks with (qta-v1 when none sits). Strata, pairs, expert items,
    training sets and evaluations default to it."""
    return _jury_version()


class ExpertDesk:
    """What strata need from whoever decides the samples the jury split 1:1:1. The experts app registers its desk
    when it loads (`expert_desk_source`); writers of labels never know it exists. With no desk, nothing is queued
    and no decision overrides the jury."""

    def decisions(self, sample_ids: list[int]) -> dict[int, float | None]:
        """The samples under expert decision among these, with the decision (None while undecided)."""
        return {}

    def follow(self, sample_ids: list[int], prompt_version: str) -> tuple[int, int]:
        """Queue the 1:1:1 samples among these and unqueue untouched items that are no longer 1:1:1; returns
        (queued, unqueued). Runs inside stratify's transaction."""
        return 0, 0

    def undecided(self, *, reliability_check: bool = False) -> QuerySet | None:
        """Ids of samples experts are still deciding (what experts see of them is limited), or None; with
        `reliability_check`, only those drawn to check the jury (experts do not see the jury's labels on them)."""
        return None

    def holds(self, sample_id: int) -> bool:
        """Whether the sample is in the expert queue (expert labels go through it)."""
        return False

    def counts(self) -> dict[str, int]:
        """Items waiting for expert labels and for adjudication, for the dashboard."""
        return {"open": 0, "adjudication": 0}


_desk = ExpertDesk()


def expert_desk_source(desk: ExpertDesk) -> None:
    global _desk
    _desk = desk


def expert_desk() -> ExpertDesk:
    return _desk


@dataclass
class StratifyReport:
    samples: int = 0
    changed: int = 0
    pairs_created: int = 0
    pairs_updated: int = 0
    pairs_removed: int = 0
    queued: int = 0
    unqueued: int = 0


def majority(values: list[float]) -> float | None:
    """The value more than half of `values` agree on, or None."""
    if not values:
        return None
    value, count = Counter(values).most_common(1)[0]
    return value if count * 2 > len(values) else None


def resolve_labels(
    labels: Iterable[Label],
    *,
    prompt_version: str = PROMPT_VERSION,  # pure: the caller says which version
    queued: bool = False,
    expert_decision: float | None = None,
) -> tuple[str, float | None, str]:
    """(stratum, final label, origin) for one sample's labels. Pure: used by `stratify` and its tests.

    For a sample in the expert queue (`queued`), the experts' word is the queue item's decision (K labels' majority
    or an adjudication), not a running majority of the labels that are in so far."""
    juror: list[Label] = []
    expert: list[float] = []
    imported: list[float] = []
    for label in labels:
        if label.source_kind == Label.SourceKind.JUROR and label.prompt_version == prompt_version:
            juror.append(label)
        elif label.status == Label.Status.VALID and label.source_kind == Label.SourceKind.EXPERT:
            expert.append(label.judgment)  # type: ignore[arg-type]
        elif label.status == Label.Status.VALID and label.source_kind == Label.SourceKind.IMPORTED:
            imported.append(label.judgment)  # type: ignore[arg-type]
    valid = [label.judgment for label in juror if label.status == Label.Status.VALID]
    if not juror:
        stratum = Stratum.UNLABELLED
    elif len(valid) < 3:
        stratum = Stratum.INCOMPLETE
    else:
        top = Counter(valid).most_common(1)[0][1]
        stratum = (
            Stratum.D3_0 if top == len(valid) else Stratum.D2_1 if top * 2 > len(valid) else Stratum.D1_1_1
        )
    # An expert decision overrides the jury; the jury overrides a label that came with the data.
    decided = expert_decision if queued else majority(expert)
    if decided is not None:
        return stratum, decided, LabelOrigin.EXPERT
    if stratum == Stratum.D3_0:
        return stratum, valid[0], LabelOrigin.JURY_CONSENSUS
    if stratum == Stratum.D2_1:
        return stratum, majority(valid), LabelOrigin.JURY_MAJORITY  # type: ignore[arg-type]
    if (given := majority(imported)) is not None:
        return stratum, given, LabelOrigin.IMPORTED
    return stratum, None, LabelOrigin.NONE


def choose_pair(labels: list[Label]) -> tuple[Label, Label] | None:
    """(chosen, rejected) for a 2:1 split of valid juror labels: the first majority juror by name, and the
    minority juror. None unless exactly three valid labels split 2:1."""
    valid = sorted(
        (lab for lab in labels if lab.status == Label.Status.VALID), key=lambda lab: lab.source_name
    )
    value = majority([lab.judgment for lab in valid])  # type: ignore[misc]
    if len(valid) != 3 or value is None or all(lab.judgment == value for lab in valid):
        return None
    chosen = next(lab for lab in valid if lab.judgment == value)
    rejected = next(lab for lab in valid if lab.judgment != value)
    return chosen, rejected


def stratify(*, sample_ids: Iterable[int], prompt_version: str | None = None) -> StratifyReport:
    """Re-derive strata, final labels, preference pairs and expert-queue items of these samples from their labels
    (the jury's asked with `prompt_version`, by default the template the sitting jury asks with).

    The samples' rows are locked first (in id order, so two writers never deadlock): two transactions that each add
    a label to the same sample then stratify it one after the other, the second seeing the first's label. Without
    the lock, each could miss the other's uncommitted label and leave the sample *incomplete* with three labels."""
    prompt_version = prompt_version or jury_prompt_version()
    ids = sorted(set(sample_ids))
    report = StratifyReport(samples=len(ids))
    for start in range(0, len(ids), BATCH):
        chunk = ids[start : start + BATCH]
        with transaction.atomic():
            report.changed += _resolve(chunk, prompt_version)
            _sync_pairs(chunk, prompt_version, report)
            queued, unqueued = _desk.follow(chunk, prompt_version)
            report.queued += queued
            report.unqueued += unqueued
    return report


def stratify_all(*, prompt_version: str | None = None) -> StratifyReport:
    return stratify(sample_ids=Sample.objects.values_list("pk", flat=True), prompt_version=prompt_version)


def _resolve(chunk: list[int], prompt_version: str) -> int:
    samples = list(
        # NO KEY UPDATE: it waits for another writer's stratify, but not for writers whose new label rows merely
        # reference the sample (their foreign-key check holds KEY SHARE) — waiting on those would deadlock.
        Sample.objects.select_for_update(no_key=True)
        .filter(id__in=chunk)
        .order_by("id")
        .only("id", "stratum", "final_label", "final_label_origin")
    )
    decisions = _desk.decisions(chunk)
    by_sample: dict[int, list[Label]] = {pk: [] for pk in chunk}
    for label in Label.objects.filter(sample_id__in=chunk).only(
        "sample_id", "source_kind", "prompt_version", "status", "judgment"
    ):
        by_sample[label.sample_id].append(label)
    dirty = []
    for sample in samples:
        resolved = resolve_labels(
            by_sample[sample.pk],
            prompt_version=prompt_version,
            queued=sample.pk in decisions,
            expert_decision=decisions.get(sample.pk),
        )
        if resolved != (sample.stratum, sample.final_label, sample.final_label_origin):
            sample.stratum, sample.final_label, sample.final_label_origin = resolved
            dirty.append(sample)
    Sample.objects.bulk_update(dirty, ["stratum", "final_label", "final_label_origin"], batch_size=BATCH)
    return len(dirty)


def _sync_pairs(chunk: list[int], prompt_version: str, report: StratifyReport) -> None:
    d21 = set(Sample.objects.filter(pk__in=chunk, stratum=Stratum.D2_1).values_list("pk", flat=True))
    existing = {
        p.sample_id: p
        for p in PreferencePair.objects.filter(sample_id__in=chunk, prompt_version=prompt_version)
    }
    by_sample: dict[int, list[Label]] = {pk: [] for pk in d21}
    for label in Label.objects.filter(
        sample_id__in=d21, source_kind=Label.SourceKind.JUROR, prompt_version=prompt_version
    ).only("pk", "sample_id", "source_name", "status", "judgment"):
        by_sample[label.sample_id].append(label)
    new, changed = [], []
    for pk, labels in by_sample.items():
        pair = choose_pair(labels)
        if pair is None:
            continue
        chosen, rejected = pair
        current = existing.get(pk)
        if current is None:
            new.append(
                PreferencePair(sample_id=pk, prompt_version=prompt_version, chosen=chosen, rejected=rejected)
            )
        elif (current.chosen_id, current.rejected_id) != (chosen.pk, rejected.pk):
            current.chosen, current.rejected = chosen, rejected
            changed.append(current)
    PreferencePair.objects.bulk_create(new, ignore_conflicts=True)
    PreferencePair.objects.bulk_update(changed, ["chosen", "rejected"])
    stale = [pk for pk in existing if pk not in d21]
    if stale:
        report.pairs_removed += PreferencePair.objects.filter(
            sample_id__in=stale, prompt_version=prompt_version
        ).delete()[0]
    report.pairs_created += len(new)
    report.pairs_updated += len(changed)
