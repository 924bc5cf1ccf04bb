"""Oracle-guided hard-negative mining, the first step of an OGDPO round.

The DPO checkpoint re-judges its own training set. Where its judgment differs from the label (or cannot be read),
the oracle juror judges the sample; where the oracle confirms the label, the pair (chosen = the correct annotation,
rejected = the checkpoint's output) is a hard negative. Where the oracle sides with the model, the label itself is
in doubt and the sample is left out. Every mined sample and its outcome is kept in the snapshot's manifest.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from django.utils import timezone

from annotation.models import Label, Sample
from guardmodel.models import GuardCheckpoint, GuardJob
from guardmodel.services import guard_job_create, guard_job_run, sample_input, verdict_label
from jury.backends import backend_for_juror
from jury.models import Juror
from training import datasets
from training.datasets import Built, SnapshotError
from training.models import DatasetSnapshot, Stage

ORACLE_CHUNK = 32


def oracle_juror() -> Juror:
    oracle = Juror.objects.filter(is_oracle=True, enabled=True).first()
    if oracle is None:
        raise SnapshotError(
            "no oracle: an OGDPO round needs an enabled juror marked as the oracle (Admin → Jurors → is oracle)"
        )
    return oracle


def _guard_labels(checkpoint: GuardCheckpoint, sample_ids: list[int]) -> dict[int, Label]:
    job = guard_job_create(checkpoint=checkpoint, sample_ids=sample_ids, enqueue=False)
    guard_job_run(job_id=job.pk)
    job.refresh_from_db()
    if job.status != GuardJob.Status.SUCCEEDED:
        raise SnapshotError(
            f"mining: the {checkpoint.name} checkpoint could not judge the DPO set: {job.error[:500]}"
        )
    return {
        label.sample_id: label
        for label in Label.objects.filter(
            sample_id__in=sample_ids, source_kind=Label.SourceKind.GUARD, source_name=checkpoint.name,
            prompt_version=checkpoint.prompt_version,
        )
    }  # fmt: skip


def _oracle_labels(oracle: Juror, sample_ids: list[int]) -> dict[int, Label]:
    """The oracle's label per sample: reused when it has judged the sample before, else asked now and stored."""

    def stored() -> dict[int, Label]:
        return {
            label.sample_id: label
            for label in Label.objects.filter(
                sample_id__in=sample_ids, source_kind=Label.SourceKind.ORACLE, source_name=oracle.name,
                prompt_version=oracle.prompt_version,
            )
        }  # fmt: skip

    have = stored()
    todo = [pk for pk in sample_ids if pk not in have]
    if not todo:
        return have  # no model loaded (or server called) when nothing is left to ask
    backend = backend_for_juror(oracle)
    for start in range(0, len(todo), ORACLE_CHUNK):
        samples = list(
            Sample.objects.filter(pk__in=todo[start : start + ORACLE_CHUNK]).select_related("image")
        )
        verdicts = backend.judge([sample_input(s) for s in samples])
        Label.objects.bulk_create(
            [verdict_label(v, sample_id=s.pk, kind=Label.SourceKind.ORACLE, name=oracle.name,
                           prompt_version=oracle.prompt_version) for s, v in zip(samples, verdicts, strict=True)],
            ignore_conflicts=True,
        )  # fmt: skip
    return stored()


def ogdpo_build(*, dpo_snapshot: DatasetSnapshot, checkpoint: GuardCheckpoint) -> Built:
    """Mine hard negatives with the DPO checkpoint, then add reviewed guard errors and expert pairs."""
    oracle = oracle_juror()
    dpo_records = datasets.snapshot_records(dpo_snapshot)
    by_sample = {r["sample_id"]: r for r in dpo_records}
    ids = sorted(by_sample)
    guard = _guard_labels(checkpoint, ids)
    conflicts = [pk for pk in ids if pk in guard and guard[pk].judgment != by_sample[pk]["chosen_judgment"]]
    oracle_labels = _oracle_labels(oracle, conflicts)
    records: list[dict[str, Any]] = []
    mined: list[dict[str, Any]] = []
    outcomes: Counter[str] = Counter()
    for pk in conflicts:
        record, model, verdict = by_sample[pk], guard[pk], oracle_labels.get(pk)
        if verdict is None or verdict.judgment is None:
            outcome = "oracle could not judge"
        elif verdict.judgment == record["chosen_judgment"]:
            outcome = "hard negative"
            records.append({
                key: record[key] for key in ("sample_id", "question", "thinking", "answer", "image", "chosen",
                                             "chosen_judgment")
            } | {"origin": "hard_negative", "rejected": model.raw_output or model.analysis,
                 "rejected_judgment": model.judgment, "guard_label_id": model.pk, "oracle_label_id": verdict.pk})  # fmt: skip
        else:
            outcome = "oracle sided with the model"
        outcomes[outcome] += 1
        mined.append({"sample_id": pk, "label": record["chosen_judgment"], "model": model.judgment,
                      "model_status": model.status, "oracle": verdict.judgment if verdict else None,
                      "outcome": outcome})  # fmt: skip
    records += datasets.review_records(dpo_snapshot.prompt_version)
    records += datasets.expert_pair_records(dpo_snapshot.prompt_version)
    report = {
        "checkpoint": checkpoint.name, "oracle": oracle.name, "dpo_snapshot": dpo_snapshot.content_hash,
        "judged": len(guard), "agreed": len(guard) - len(conflicts), "conflicts": len(conflicts),
        **{key.replace(" ", "_"): n for key, n in outcomes.items()}, "at": timezone.now().isoformat(),
    }  # fmt: skip
    return Built(Stage.OGDPO, dpo_snapshot.prompt_version, records, {"mining": report, "mined": mined})
