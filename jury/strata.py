"""Stratification: turn the jury's votes into D3:0 / D2:1 / D1:1:1 / incomplete, preference pairs and expert work.

The stratum, the final label and its origin are derived by `annotation.services.samples_labels_resolve` (the
rules in DESIGN.md "Stratification"); this module adds what the jury's split means for training: a DPO pair for
each D2:1 sample and an expert-queue item for each D1:1:1 sample. Every step is idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction

from annotation.models import Label, Sample, Stratum
from annotation.review import expert_queue_sync
from annotation.services import BATCH, majority, samples_labels_resolve
from guardmodel.prompts import jury_prompt_version
from jury.models import PreferencePair


@dataclass
class StratifyReport:
    samples: int = 0
    changed: int = 0
    pairs_created: int = 0
    pairs_updated: int = 0
    pairs_removed: int = 0
    queued: int = 0
    unqueued: int = 0


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


def stratify(*, sample_ids: list[int], prompt_version: str | None = None) -> StratifyReport:
    """Re-derive strata, final labels, preference pairs and expert-queue items for these samples (from the labels
    asked with `prompt_version`, by default the jury's)."""
    prompt_version = prompt_version or jury_prompt_version()
    report = StratifyReport(samples=len(sample_ids))
    ids = sorted(set(sample_ids))
    for start in range(0, len(ids), BATCH):
        chunk = ids[start : start + BATCH]
        with transaction.atomic():
            report.changed += samples_labels_resolve(sample_ids=chunk, prompt_version=prompt_version)
            _sync_pairs(chunk, prompt_version, report)
            added, removed = expert_queue_sync(sample_ids=chunk, prompt_version=prompt_version)
        report.queued += added
        report.unqueued += removed
    return report


def stratify_all(*, prompt_version: str | None = None) -> StratifyReport:
    return stratify(
        sample_ids=list(Sample.objects.values_list("pk", flat=True)), prompt_version=prompt_version
    )
