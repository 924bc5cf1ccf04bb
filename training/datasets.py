"""Building, storing and exporting the training sets of the three rounds.

- SFT: train-split D3:0 samples (jury consensus, with a juror's analysis that agrees) plus finalized expert labels.
- DPO: the train-split D2:1 preference pairs (chosen = a majority juror's annotation, rejected = the minority's),
  except samples the experts have since decided.
- OGDPO: hard negatives mined with the DPO checkpoint and confirmed by the oracle, reviewer-confirmed "guard is
  wrong" cases, and pairs from expert-decided D1:1:1 samples (rejected = a juror annotation the experts overruled).

A snapshot is written once under GUARDTRACE_TRAINING_DIR/snapshots/<hash>/ and never changed; building the same
data again returns the stored one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from annotation.models import ImageAsset, Label, LabelOrigin, PreferencePair, Sample, Split, Stratum
from annotation.services import ImportRejected, image_store
from annotation.strata import jury_prompt_version
from common.errors import ApplicationError
from experts.models import ExpertQueueItem, ReviewDecision, ReviewStatus
from qta import protocol, training_files, training_records
from qta.images import ImageInfo, ImageRejected, ImageSource, inspect_image
from qta.protocol import PROMPT_VERSION
from qta.sample_files import RecordError
from training.models import DatasetSnapshot, Stage

LEVEL_WORDS = {0.0: "safe", 0.5: "potentially harmful", 1.0: "harmful"}


class SnapshotError(ApplicationError):
    """A training set that cannot be built or used; the message says what is wrong and where."""


@dataclass
class Built:
    stage: str
    prompt_version: str
    records: list[dict[str, Any]]
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, Any]:
        return record_counts(self.stage, self.records)


def record_counts(stage: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    key = "judgment" if stage == Stage.SFT else "chosen_judgment"
    return {
        "origin": dict(Counter(r["origin"] for r in records)),
        "judgment": {
            protocol.format_judgment(v): n for v, n in sorted(Counter(r[key] for r in records).items())
        },
        "with_image": sum(1 for r in records if r.get("image")),
        "samples": len(
            {r["sample_id"] if r["sample_id"] is not None else f"line {r['source_line']}" for r in records}
        ),
    }


def _text(sample: Sample) -> dict[str, Any]:
    return {
        "sample_id": sample.pk,
        "question": sample.question,
        "thinking": sample.thinking,
        "answer": sample.answer,
        "image": sample.image.sha256 if sample.image_id else None,  # type: ignore[union-attr]
    }


def _target(analysis: str, judgment: float) -> str:
    analysis = analysis.strip() or f"Experts judged this exchange {LEVEL_WORDS[judgment]}."
    return protocol.format_target(analysis=analysis, judgment=judgment)


def _juror_labels(sample_ids: list[int], prompt_version: str) -> dict[int, list[Label]]:
    grouped: dict[int, list[Label]] = {}
    for label in Label.objects.filter(
        sample_id__in=sample_ids, source_kind=Label.SourceKind.JUROR, prompt_version=prompt_version,
        status=Label.Status.VALID,
    ).order_by("source_name"):  # fmt: skip
        grouped.setdefault(label.sample_id, []).append(label)
    return grouped


def _decided_items(reason: str | None = None):
    items = ExpertQueueItem.objects.filter(
        status=ReviewStatus.DONE, decision__isnull=False, sample__split=Split.TRAIN
    ).select_related("sample__image")
    return items.filter(reason=reason) if reason else items


def sft_build(prompt_version: str | None = None) -> Built:
    prompt_version = prompt_version or jury_prompt_version()
    samples = list(
        Sample.objects.filter(
            split=Split.TRAIN, stratum=Stratum.D3_0, final_label_origin=LabelOrigin.JURY_CONSENSUS
        ).select_related("image")
    )
    labels = _juror_labels([s.pk for s in samples], prompt_version)
    records = []
    for sample in samples:
        agreeing = [lab for lab in labels.get(sample.pk, []) if lab.judgment == sample.final_label]
        if not agreeing:
            continue  # stratified under another prompt version
        records.append({
            **_text(sample), "origin": "d3_0", "judgment": sample.final_label,
            "target": _target(agreeing[0].analysis, sample.final_label),  # type: ignore[arg-type]
            "label_ids": [lab.pk for lab in agreeing],
        })  # fmt: skip
    for item in _decided_items():
        records.append({
            **_text(item.sample), "origin": "expert", "judgment": item.decision,
            "target": _target(item.decision_analysis, item.decision),  # type: ignore[arg-type]
            "expert_item_id": item.pk, "decided_by": item.decided_by,
        })  # fmt: skip
    return Built(Stage.SFT, prompt_version, records)


def dpo_build(prompt_version: str | None = None) -> Built:
    prompt_version = prompt_version or jury_prompt_version()
    pairs = (
        PreferencePair.objects.filter(prompt_version=prompt_version, sample__split=Split.TRAIN)
        .exclude(sample__final_label_origin=LabelOrigin.EXPERT)
        .select_related("sample__image", "chosen", "rejected")
    )
    records = [
        {
            **_text(pair.sample),
            "origin": "d2_1",
            "chosen": _target(pair.chosen.analysis, pair.chosen.judgment),  # type: ignore[arg-type]
            "rejected": _target(pair.rejected.analysis, pair.rejected.judgment),  # type: ignore[arg-type]
            "chosen_judgment": pair.chosen.judgment,
            "rejected_judgment": pair.rejected.judgment,
            "pair_id": pair.pk,
            "label_ids": [pair.chosen_id, pair.rejected_id],
        }  # fmt: skip
        for pair in pairs
    ]
    return Built(Stage.DPO, prompt_version, records)


def training_annotation(sample: Sample, prompt_version: str) -> tuple[str, float] | None:
    """The sample's training label as an `Analysis … Judgment …` text: the experts' decision, else a juror's
    annotation that agrees with the final label."""
    item = ExpertQueueItem.objects.filter(sample=sample, status=ReviewStatus.DONE).first()
    if item is not None and item.decision is not None:
        return _target(item.decision_analysis, item.decision), item.decision
    if sample.final_label is None:
        return None
    for label in _juror_labels([sample.pk], prompt_version).get(sample.pk, []):
        if label.judgment == sample.final_label:
            return _target(label.analysis, sample.final_label), sample.final_label
    return None


def review_records(prompt_version: str) -> list[dict[str, Any]]:
    """Reviewer-confirmed "guard is wrong" cases: chosen = the training label, rejected = the guard's output."""
    records = []
    decisions = ReviewDecision.objects.filter(
        verdict=ReviewDecision.Verdict.GUARD_WRONG, sample__split=Split.TRAIN, guard_label__isnull=False
    ).select_related("sample__image", "guard_label")
    for decision in decisions:
        annotation = training_annotation(decision.sample, prompt_version)
        if annotation is None:
            continue
        chosen, judgment = annotation
        records.append({
            **_text(decision.sample), "origin": "review", "chosen": chosen, "chosen_judgment": judgment,
            "rejected": decision.guard_label.raw_output or _target(  # type: ignore[union-attr]
                decision.guard_label.analysis, decision.guard_judgment),  # type: ignore[union-attr]
            "rejected_judgment": decision.guard_judgment, "review_decision_id": decision.pk,
        })  # fmt: skip
    return records


def expert_pair_records(prompt_version: str) -> list[dict[str, Any]]:
    """Expert-decided D1:1:1 samples: chosen = the decision, rejected = each juror annotation the experts overruled."""
    items = list(_decided_items(ExpertQueueItem.Reason.JURY_SPLIT))
    labels = _juror_labels([item.sample_id for item in items], prompt_version)
    records = []
    for item in items:
        chosen = _target(item.decision_analysis, item.decision)  # type: ignore[arg-type]
        for label in labels.get(item.sample_id, []):
            if label.judgment != item.decision:
                records.append({
                    **_text(item.sample), "origin": "expert_pair", "chosen": chosen,
                    "chosen_judgment": item.decision, "rejected": _target(label.analysis, label.judgment),  # type: ignore[arg-type]
                    "rejected_judgment": label.judgment, "expert_item_id": item.pk, "label_ids": [label.pk],
                })  # fmt: skip
    return records


# -- storing ------------------------------------------------------------------------------------------------------


def snapshots_dir() -> Path:
    return Path(settings.GUARDTRACE_TRAINING_DIR) / "snapshots"


def _canonical(records: list[dict[str, Any]]) -> bytes:
    ordered = sorted(records, key=lambda r: (r["origin"], r["sample_id"], json.dumps(r, sort_keys=True)))
    return "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in ordered).encode()


def check_trainable(stage: str, records: list[dict[str, Any]]) -> None:
    """Refuse a set no round should train on: empty, or (SFT) a single class the guard would learn to always say.
    A preference pair holds both sides by construction, so a pair set is only refused when empty."""
    name = Stage(stage).label
    if not records:
        hint = {
            Stage.SFT: "no train-split D3:0 samples and no decided expert items: run the jury and stratify first",
            Stage.DPO: "no train-split D2:1 preference pairs: run the jury and stratify first",
            Stage.OGDPO: "no hard negatives, reviewed guard errors or expert pairs were found",
        }[Stage(stage)]
        raise SnapshotError(f"the {name} training set is empty: {hint}")
    if stage == Stage.SFT:
        classes = {protocol.is_harmful(r["judgment"]) for r in records}
        if len(classes) < 2:
            only = "harmful" if classes.pop() else "safe"
            raise SnapshotError(
                f"the {name} training set has {len(records)} records, all {only}: a guard trained on one class "
                "learns to always give that answer; label samples of the other class first"
            )


def missing_images(records: list[dict[str, Any]]) -> list[str]:
    """'sample #id (image abc…)' for each record whose image file is gone from storage."""
    shas = {r["image"] for r in records if r.get("image")}
    assets = {a.sha256: a for a in ImageAsset.objects.filter(sha256__in=shas)}
    missing = []
    for record in records:
        sha = record.get("image")
        if not sha:
            continue
        asset = assets.get(sha)
        if asset is None or not asset.file.storage.exists(asset.file.name):
            where = (
                f"sample #{record['sample_id']}"
                if record["sample_id"] is not None
                else f"line {record['source_line']}"
            )
            missing.append(f"{where} (image {sha[:12]})")
    return missing


def snapshot_store(built: Built, *, user=None, source: str = DatasetSnapshot.Source.BUILT) -> DatasetSnapshot:
    """Write the records once, named by their hash; the same data again returns the snapshot already stored."""
    check_trainable(built.stage, built.records)
    body = _canonical(built.records)
    digest = hashlib.sha256(f"{built.stage}\n{built.prompt_version}\n".encode() + body).hexdigest()
    existing = DatasetSnapshot.objects.filter(content_hash=digest).first()
    if existing is not None:
        return existing
    folder = snapshots_dir() / digest
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / "records.jsonl.partial"
    partial.write_bytes(body)
    partial.replace(folder / "records.jsonl")
    with transaction.atomic():
        snapshot, _ = DatasetSnapshot.objects.get_or_create(
            content_hash=digest,
            defaults={"stage": built.stage, "prompt_version": built.prompt_version, "source": source,
                      "records": len(built.records), "counts": built.counts, "manifest": built.manifest,
                      "path": str(folder), "created_by": user},
        )  # fmt: skip
    return snapshot


def snapshot_records(snapshot: DatasetSnapshot) -> list[dict[str, Any]]:
    path = Path(snapshot.path) / "records.jsonl"
    if not path.is_file():
        raise SnapshotError(f"{path}: the snapshot's records file is missing")
    body = path.read_bytes()
    digest = hashlib.sha256(f"{snapshot.stage}\n{snapshot.prompt_version}\n".encode() + body).hexdigest()
    if digest != snapshot.content_hash:
        raise SnapshotError(f"{path}: the records changed after the snapshot was taken (hash {digest[:12]})")
    return [json.loads(line) for line in body.decode().splitlines()]


def image_paths(records: list[dict[str, Any]], copy_to: Path | None = None) -> dict[str, str]:
    """sha256 → a local file path for each image; copied under copy_to when the storage has no local paths."""
    shas = {r["image"] for r in records if r.get("image")}
    paths = {}
    for asset in ImageAsset.objects.filter(sha256__in=shas):
        try:
            paths[asset.sha256] = asset.file.path
        except NotImplementedError:
            if copy_to is None:
                raise
            target = copy_to / f"{asset.sha256}{Path(asset.file.name).suffix}"
            with asset.file.open("rb") as source, target.open("wb") as out:
                shutil.copyfileobj(source, out)
            paths[asset.sha256] = str(target)
    return paths


# -- import -------------------------------------------------------------------------------------------------------


def snapshot_import(
    data: bytes, *, name: str, stage: str, images: ImageSource | None = None, user=None,
    prompt_version: str = PROMPT_VERSION,
) -> DatasetSnapshot:  # fmt: skip
    """A training file made elsewhere (the GuardTrace-VL release's SFT / DPO files, LLaMA-Factory sharegpt or alpaca,
    TRL; shapes in `qta.training_files`) as an imported snapshot. Every row is checked first; on any error nothing is
    stored and `ImportRejected` lists each as file:line: field: reason. Images are read from `images` (a folder or
    zip, looked up as `qta.images` does: the path, under a single top folder or without its leading
    folders, else a unique base name) and
    stored like samples'."""
    if stage not in Stage.values:
        raise SnapshotError(f"unknown stage {stage!r}: use one of {', '.join(Stage.values)}")
    errors: list[RecordError] = []
    rows: list[tuple[training_files.Row, ImageInfo | None]] = []
    for item in training_files.parse_training_file(data, name=name, stage=stage):
        if isinstance(item, RecordError):
            errors.append(item)
            continue
        info = None
        if item.image is not None:
            try:
                if images is None:
                    raise ImageRejected("the row names an image but no images folder or archive was given")
                info = inspect_image(
                    images.read(item.image, max_bytes=settings.GUARDTRACE_MAX_IMAGE_BYTES),
                    max_pixels=settings.GUARDTRACE_MAX_IMAGE_PIXELS, max_bytes=settings.GUARDTRACE_MAX_IMAGE_BYTES,
                )  # fmt: skip
            except ImageRejected as exc:
                errors.append(RecordError(name, item.line, item.image_field, f"{item.image}: {exc}"))
                continue
        rows.append((item, info))
    if errors:
        raise ImportRejected(errors)
    records = [_imported_record(row, info, stage) for row, info in rows]
    check_trainable(stage, records)
    formats_seen = sorted({row.fmt for row, _ in rows})
    built = Built(stage, prompt_version, records, manifest={"imported_from": name, "formats": formats_seen})
    with transaction.atomic():
        _store_images({info.sha256: (row.image, info) for row, info in rows if info is not None}, images)
        return snapshot_store(built, user=user, source=DatasetSnapshot.Source.IMPORTED)


def _imported_record(row: training_files.Row, info: ImageInfo | None, stage: str) -> dict[str, Any]:
    record: dict[str, Any] = {
        "sample_id": None, "source_line": row.line, "question": row.question, "thinking": row.thinking,
        "answer": row.answer, "image": info.sha256 if info else None, "origin": "imported",
    }  # fmt: skip
    if stage == Stage.SFT:
        record.update(target=row.targets["target"], judgment=row.judgments["target"])
    else:
        record.update(chosen=row.targets["chosen"], rejected=row.targets["rejected"],
                      chosen_judgment=row.judgments["chosen"], rejected_judgment=row.judgments["rejected"])  # fmt: skip
    return record


def _store_images(wanted: dict[str, tuple[str | None, ImageInfo]], images: ImageSource | None) -> None:
    """Each image not yet stored, content-addressed as the sample import stores them."""
    for relative, info in wanted.values():
        if relative is not None and images is not None:
            image_store(images.read(relative, max_bytes=info.size_bytes), info)


# -- export -------------------------------------------------------------------------------------------------------


def snapshot_export(snapshot: DatasetSnapshot, out_dir: Path, *, fmt: str = "trl") -> Path:
    """TRL-ready JSONL (`trl`) or LLaMA-Factory sharegpt (`llamafactory`, with dataset_info.json), images copied
    under out_dir/images/ and named by their sha256. Returns the data file."""
    if fmt not in ("trl", "llamafactory"):
        raise SnapshotError(f"unknown export format {fmt!r}: use trl or llamafactory")
    records = snapshot_records(snapshot)
    if gone := missing_images(records):
        raise SnapshotError(f"{len(gone)} image(s) of this snapshot were deleted: {', '.join(gone[:5])}")
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    copied: dict[str, str] = {}
    for asset in ImageAsset.objects.filter(sha256__in={r["image"] for r in records if r.get("image")}):
        name = f"images/{asset.sha256}{Path(asset.file.name).suffix}"
        with asset.file.open("rb") as source, (out_dir / name).open("wb") as out:
            shutil.copyfileobj(source, out)
        copied[asset.sha256] = name
    stem = f"guardtrace-{snapshot.stage}-{snapshot.content_hash[:12]}"
    data = out_dir / f"{stem}.jsonl" if fmt == "trl" else out_dir / f"{stem}.json"
    rows = []
    for record in records:
        images = [copied[record["image"]]] if record.get("image") else []
        rows.append(
            training_records.trl_row(record, snapshot.stage, images)
            if fmt == "trl"
            else training_records.sharegpt_row(record, snapshot.stage, images)
        )
    if fmt == "trl":
        data.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    else:
        data.write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
        (out_dir / "dataset_info.json").write_text(
            json.dumps(training_records.sharegpt_dataset_info(stem, snapshot.stage, data.name), indent=2)
        )
    return data
