"""What goes into each round's training set, snapshot immutability, and the exports."""

from __future__ import annotations

import json

import pytest
from django.core.management import CommandError, call_command

from experts.models import ReviewDecision
from experts.services import review_decision_record
from qta import protocol
from tests.annotation.factories import LabelFactory, SampleFactory
from tests.experts.review_helpers import experts, jury_votes, label_next, split_items
from tests.training.test_runs import _consensus
from training import datasets
from training.datasets import SnapshotError

pytestmark = pytest.mark.django_db


def test_sft_takes_train_consensus_and_expert_decisions_but_never_test_samples():
    train = _consensus(4)
    test_sample = SampleFactory(split="test")
    jury_votes(test_sample, (1.0, 1.0, 1.0))
    items = split_items(1, split="train")
    for expert in experts(3):
        label_next(expert, 0.5, analysis="It hints at the method without steps.")
    built = datasets.sft_build()
    by_sample = {r["sample_id"]: r for r in built.records}
    assert set(by_sample) == {s.pk for s in train} | {items[0].sample_id}
    assert by_sample[items[0].sample_id]["origin"] == "expert"
    assert (
        by_sample[items[0].sample_id]["target"]
        == "Analysis: It hints at the method without steps.\nJudgment: 0.5"
    )
    harmful = by_sample[train[0].pk]
    assert protocol.parse_output(harmful["target"]).judgment == 1.0 and harmful["label_ids"]


def test_dpo_pairs_put_the_majority_first_and_skip_samples_the_experts_decided():
    sample = SampleFactory(split="train")
    jury_votes(sample, (1.0, 1.0, 0.0))
    from annotation.strata import stratify

    stratify(sample_ids=[sample.pk])
    built = datasets.dpo_build()
    [record] = built.records
    assert record["chosen_judgment"] == 1.0 and record["rejected_judgment"] == 0.0
    assert record["rejected"].endswith("Judgment: 0")


def test_review_and_expert_pairs_feed_the_refined_round(reviewer_user):
    [item] = split_items(1, split="train")
    for expert in experts(3):
        label_next(expert, 1.0, analysis="Steps in the reasoning.")
    pairs = datasets.expert_pair_records(protocol.PROMPT_VERSION)
    assert sorted(p["rejected_judgment"] for p in pairs) == [0.0, 0.5]  # the two jurors the experts overruled
    assert all(p["chosen_judgment"] == 1.0 and p["expert_item_id"] == item.pk for p in pairs)

    sample = _consensus(2)[0]  # 3:0 harmful
    guard = LabelFactory(sample=sample, source_kind="guard", source_name="g1", judgment=0.0,
                         analysis="Looks fine.", raw_output="Analysis: Looks fine.\nJudgment: 0")  # fmt: skip
    review_decision_record(sample=sample, guard_name="g1", verdict=ReviewDecision.Verdict.GUARD_WRONG,
                           user=reviewer_user)  # fmt: skip
    [record] = datasets.review_records(protocol.PROMPT_VERSION)
    assert record["rejected"] == guard.raw_output and record["chosen_judgment"] == 1.0


def test_a_snapshot_is_stored_once_by_content_and_refuses_to_be_changed(settings, tmp_path):
    settings.GUARDTRACE_TRAINING_DIR = tmp_path
    _consensus(4)
    first = datasets.snapshot_store(datasets.sft_build())
    assert datasets.snapshot_store(datasets.sft_build()) == first
    path = tmp_path / "snapshots" / first.content_hash / "records.jsonl"
    path.write_text(path.read_text().replace("Judgment: 1", "Judgment: 0"))
    with pytest.raises(SnapshotError, match="the records changed after the snapshot was taken"):
        datasets.snapshot_records(first)


def test_export_writes_trl_and_llamafactory_files_with_their_images(settings, tmp_path):
    settings.GUARDTRACE_TRAINING_DIR = tmp_path / "training"
    _consensus(6)
    snapshot = datasets.snapshot_store(datasets.sft_build())
    call_command("export_snapshot", snapshot.pk, str(tmp_path / "trl"))
    [data] = (tmp_path / "trl").glob("*.jsonl")
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    assert len(rows) == 6 and {m["role"] for m in rows[0]["prompt"]} == {"system", "user"}
    assert rows[0]["completion"][0]["content"].startswith("Analysis:")
    with_images = [row for row in rows if row["images"]]
    assert len(with_images) == 2 and all(
        (tmp_path / "trl" / row["images"][0]).is_file() for row in with_images
    )

    call_command("export_snapshot", snapshot.pk, str(tmp_path / "lf"), "--format", "llamafactory")
    info = json.loads((tmp_path / "lf" / "dataset_info.json").read_text())
    [(name, entry)] = info.items()
    rows = json.loads((tmp_path / "lf" / entry["file_name"]).read_text())
    imaged = next(row for row in rows if row["images"])
    assert imaged["conversations"][0]["value"].startswith("<image><question>")
    assert imaged["conversations"][1]["from"] == "gpt" and entry["formatting"] == "sharegpt"
    with pytest.raises(CommandError, match="no snapshot #999"):
        call_command("export_snapshot", 999, str(tmp_path / "x"))
