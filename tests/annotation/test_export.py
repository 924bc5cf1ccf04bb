from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command

from annotation.models import ImageAsset, Label, Sample
from annotation.services import label_record, samples_import
from qta.images import DirectoryImageSource
from qta.synthetic import generate

pytestmark = pytest.mark.django_db

SAMPLE_FIELDS = [
    "question", "thinking", "answer", "image__sha256", "subset", "split", "category", "input_variant",
    "source_dataset", "generator_model", "external_id", "content_hash", "stratum", "final_label",
    "final_label_origin",
]  # fmt: skip
LABEL_FIELDS = [
    "sample__content_hash", "source_kind", "source_name", "prompt_version", "analysis", "judgment", "raw_output",
    "status", "latency_ms", "created_at",
]  # fmt: skip


def _state():
    samples = sorted(Sample.objects.values_list(*SAMPLE_FIELDS), key=lambda row: row[11])
    labels = sorted(Label.objects.values_list(*LABEL_FIELDS), key=lambda row: (row[0], row[1], row[2]))
    return samples, labels


def test_export_then_import_round_trips_to_identical_samples_and_labels(tmp_path):
    generate(tmp_path / "syn", count=40, seed=3)
    samples_import(data=(tmp_path / "syn" / "samples.jsonl").read_bytes(), name="syn", fmt="jsonl",
                   images=DirectoryImageSource(tmp_path / "syn"))  # fmt: skip
    # Labels of every kind and status, including an invalid juror output kept raw.
    first, second = Sample.objects.order_by("id")[:2]
    for name, judgment in (("gemma", 1.0), ("mistral", 1.0), ("qwen", 0.5)):
        label_record(sample=first, source_kind="juror", source_name=name, prompt_version="qta-v1",
                     judgment=judgment, analysis=f"{name} says <b>so</b>", latency_ms=812.5)  # fmt: skip
    label_record(sample=second, source_kind="juror", source_name="gemma", prompt_version="qta-v1",
                 judgment=None, status="invalid", raw_output="I cannot decide…")  # fmt: skip
    before = _state()
    assert [row[12] for row in before[0]].count("d2_1") == 1

    call_command("export_qta", str(tmp_path / "out"), stdout=io.StringIO(), verbosity=0)
    Label.objects.all().delete()
    Sample.objects.all().delete()
    ImageAsset.objects.all().delete()
    call_command("import_qta", str(tmp_path / "out" / "samples.jsonl"), stdout=io.StringIO(), verbosity=0)
    after = _state()
    assert after == before
    assert sorted(Sample.objects.values_list("stratum", flat=True)).count("d2_1") == 1


def test_export_filters_and_refuses_a_non_empty_folder(tmp_path):
    generate(tmp_path / "syn", count=40, seed=1)
    samples_import(data=(tmp_path / "syn" / "samples.jsonl").read_bytes(), name="syn", fmt="jsonl",
                   images=DirectoryImageSource(tmp_path / "syn"))  # fmt: skip
    call_command("export_qta", str(tmp_path / "test"), split="test", stdout=io.StringIO(), verbosity=0)
    rows = [json.loads(line) for line in (tmp_path / "test" / "samples.jsonl").read_text().splitlines()]
    assert rows and {row["split"] for row in rows} == {"test"}
    assert len(rows) == Sample.objects.filter(split="test").count()
    with pytest.raises(CommandError, match="not empty"):
        call_command("export_qta", str(tmp_path / "test"), verbosity=0)
    with pytest.raises(CommandError, match="--stratum: unknown value 'D9'"):
        call_command("export_qta", str(tmp_path / "new"), stratum="D9", verbosity=0)
