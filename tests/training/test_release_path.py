"""The GuardTrace-VL release's path, end to end, on release-shaped files built offline (no release text or data):

import the two test files as test subsets → register a tiny checkpoint with a user-supplied prompt in the release's
layout → judge → evaluate in both readings → import the SFT and DPO files → train an SFT round, then a DPO round on
the set holding a 100,000-character trace → judge again with the trained checkpoint, asked in the same layout.
"""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.models.functions import Length

from annotation.models import Label, Sample
from guardmodel.models import Evaluation, GuardCheckpoint
from training.models import DatasetSnapshot, TrainingRun

pytestmark = pytest.mark.django_db(transaction=True)


def _guard_labels(name: str) -> list[Label]:
    return list(Label.objects.filter(source_kind=Label.SourceKind.GUARD, source_name=name))


def test_release_shaped_files_go_from_import_to_a_retrained_release_layout_guard(tmp_path, tiny_base, capsys):
    release = tmp_path / "release"
    call_command("make_release_shaped", str(release), "--train", "240", "--test", "48")
    rows = {
        name: json.loads((release / "test" / name).read_text())
        for name in ("S-Eval_600.json", "MMBench_500.json")
    }
    for name, subset in (("S-Eval_600.json", "S-Eval"), ("MMBench_500.json", "MMBench")):
        call_command("import_qta", str(release / "test" / name), "--images", str(release / "test" / "images"),
                     "--split", "test", "--subset", subset, "--source-dataset", "GuardTrace-VL")  # fmt: skip
        stored = Sample.objects.filter(subset=subset, split="test", source_dataset="GuardTrace-VL")
        assert stored.count() == len(rows[name])
        assert stored.filter(image__isnull=True).count() == sum(1 for r in rows[name] if not r["image_name"])
    long_traces = Sample.objects.annotate(chars=Length("thinking")).filter(chars__gte=100_000)
    assert long_traces.count() == 1

    capsys.readouterr()
    call_command(
        "add_prompt_template",
        "standin",
        str(release / "prompts" / "stand_in_prompt.txt"),
        "--layout",
        "release",
    )
    version = capsys.readouterr().out.strip()
    call_command("register_guard", "tiny-release", "--path", str(tiny_base), "--prompt-version", version,
                 "--max-new-tokens", "40", "--max-input-tokens", "1024")  # fmt: skip
    base = GuardCheckpoint.objects.get(name="tiny-release")
    assert (base.prompt_version, base.max_input_tokens, base.max_new_tokens) == (version, 1024, 40)
    call_command("judge_samples", "--checkpoint", "tiny-release", "--sync", "--evaluate")
    before = _guard_labels("tiny-release")
    assert len(before) == Sample.objects.filter(split="test").count()
    assert {label.prompt_version for label in before} == {version}
    longest = next(label for label in before if label.sample.thinking.startswith("I look again"))
    assert longest.meta["truncated_tokens"] > 10_000 and longest.meta["prompt_tokens"] <= 1024
    call_command("evaluate", "--source", "guard:tiny-release", "--half-as", "safe")
    evaluation = Evaluation.objects.filter(source_name="tiny-release").latest("pk")
    assert evaluation.prompt_version == version and evaluation.metrics["half_as"] == "safe"
    assert set(evaluation.metrics["readings"]) == {"harmful", "safe"}
    assert set(evaluation.subsets) == {"S-Eval", "MMBench"}

    call_command("import_snapshot", str(release / "train" / "SFT_data.json"), "--stage", "sft",
                 "--images", str(release / "train" / "sft_images"))  # fmt: skip
    call_command("import_snapshot", str(release / "train" / "DPO_data.json"), "--stage", "dpo",
                 "--images", str(release / "train" / "dpo_images"))  # fmt: skip
    sft_set = DatasetSnapshot.objects.get(stage="sft")
    dpo_set = DatasetSnapshot.objects.get(stage="dpo")
    train_rows = {
        name: len(json.loads((release / "train" / name).read_text()))
        for name in ("SFT_data.json", "DPO_data.json")
    }
    assert (sft_set.records, dpo_set.records) == (train_rows["SFT_data.json"], train_rows["DPO_data.json"])

    call_command("launch_round", "--stage", "sft", "--base", "tiny-release", "--snapshot", "SFT_data.json",
                 "--tiny", "--set", "batch_size=4", "--sync")  # fmt: skip
    sft = TrainingRun.objects.get(stage="sft")
    assert sft.hyperparameters["max_length"] == 1024  # the checkpoint's input budget
    with pytest.raises(CommandError, match="trains DPO rounds, not SFT"):
        call_command(
            "launch_round", "--stage", "sft", "--base", "tiny-release", "--snapshot", str(dpo_set.pk)
        )
    trained = sft.output_checkpoint
    assert trained.prompt_version == version  # asked as it was trained: the release layout
    call_command("judge_samples", "--checkpoint", trained.name, "--sync", "--evaluate")
    after = _guard_labels(trained.name)
    valid = [label for label in after if label.status == Label.Status.VALID]
    assert len(valid) / len(after) > 0.9, [label.raw_output for label in after[:5]]
    f1_before = Evaluation.objects.filter(source_name="tiny-release", metrics__half_as="harmful").latest("pk")
    f1_after = Evaluation.objects.filter(source_name=trained.name).latest("pk")
    assert f1_after.metrics["average"]["f1"] > (f1_before.metrics["average"]["f1"] or 0) + 0.3

    # Logged less often than the round has steps: the run still reports its (mean) loss.
    call_command("launch_round", "--stage", "dpo", "--parent", "latest", "--snapshot", "DPO_data.json",
                 "--tiny", "--set", "logging_steps=1000", "--sync")  # fmt: skip
    dpo = TrainingRun.objects.get(stage="dpo")
    assert dpo.truncation["cut"] == 1 and dpo.truncation["removed_max"] > 10_000, dpo.truncation
    assert (
        dpo.step < dpo.hyperparameters["logging_steps"] and dpo.loss is not None
    )  # the mean loss of a short round
    assert dpo.output_checkpoint.prompt_version == version
