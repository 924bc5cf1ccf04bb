"""The full loop on CPU, end to end: synthetic set → jury → strata → expert labels → SFT → DPO → OGDPO.

The tiny guard must learn for real: its F1 on the synthetic test subsets after SFT is far above the untrained
checkpoint's, DPO and OGDPO keep it, and the paper's ablation shows in miniature (a QA-only prompt misses harm that
is only in the reasoning; withholding the image misses harm that is only in the image).
"""

from __future__ import annotations

import pytest

from annotation.models import Sample, Stratum
from guardmodel.models import Evaluation, GuardCheckpoint
from guardmodel.services import (
    checkpoint_activate,
    checkpoint_register,
    guard_job_create,
    guard_job_run,
)
from tests.loopback import LoopbackOpenAI
from tests.training import loop
from training import services
from training.models import TrainingRun

pytestmark = pytest.mark.django_db(transaction=True)


def _f1(evaluation: Evaluation) -> float:
    return evaluation.metrics["average"]["f1"] or 0.0


def _launch_and_run(**kwargs) -> TrainingRun:
    run = services.training_run_launch(tiny=True, enqueue=False, **kwargs)
    assert services.training_run_execute(run_id=run.pk) == "succeeded", TrainingRun.objects.get(
        pk=run.pk
    ).error
    return TrainingRun.objects.get(pk=run.pk)


def test_the_guard_learns_through_sft_dpo_and_ogdpo_from_jury_and_expert_labels(tmp_path, tiny_base):
    world = loop.import_synthetic(tmp_path / "syn", count=420)
    with LoopbackOpenAI(loop.GroundTruthJury(world.records)) as server:
        loop.make_jurors(server.url)
        loop.run_jury()
        strata = {s: Sample.objects.filter(stratum=s).count() for s in Stratum.values}
        assert strata[Stratum.D3_0] > 200 and strata[Stratum.D2_1] > 30 and strata[Stratum.D1_1_1] > 15, (
            strata
        )
        assert loop.experts_label(world) == 3 * strata[Stratum.D1_1_1]
        assert loop.decided_items() == strata[Stratum.D1_1_1]

        base = checkpoint_register(name="tiny-base", path=str(tiny_base), base_model="tiny")
        job = guard_job_create(checkpoint=base, sample_ids=list(Sample.objects.filter(split="test").values_list("pk", flat=True)),
                               evaluate_subsets=["synthetic-id", "synthetic-ood"], enqueue=False)  # fmt: skip
        guard_job_run(job_id=job.pk)
        f1_base = _f1(Evaluation.objects.get(source_name="tiny-base"))

        sft = _launch_and_run(stage="sft", base_checkpoint=base)
        assert sft.snapshot.counts["origin"] == {
            "d3_0": pytest.approx(sft.snapshot.counts["origin"]["d3_0"]),
            "expert": sft.snapshot.counts["origin"]["expert"],
        }
        assert sft.snapshot.counts["origin"]["expert"] > 10  # train-split expert decisions went in
        assert (
            sft.step == sft.max_steps > 0 and sft.history and sft.history[-1]["loss"] < sft.history[0]["loss"]
        )
        f1_sft = _f1(sft.evaluation)
        assert f1_base < 0.5 and f1_sft > 0.85 and f1_sft > f1_base + 0.4, (f1_base, f1_sft)

        dpo = _launch_and_run(stage="dpo", parent=sft)
        assert dpo.reference_checkpoint == sft.output_checkpoint == dpo.base_checkpoint
        assert dpo.reward_accuracy is not None and dpo.history[-1]["margin"] > 0
        f1_dpo = _f1(dpo.evaluation)
        assert f1_dpo >= f1_sft - 0.05, (f1_sft, f1_dpo)

        ogdpo = _launch_and_run(stage="ogdpo", parent=dpo)
        mining = ogdpo.snapshot.manifest["mining"]
        assert mining["judged"] == dpo.snapshot.records and mining["oracle"] == "oracle"
        assert ogdpo.snapshot.counts["origin"].get("expert_pair", 0) > 10
        assert _f1(ogdpo.evaluation) >= f1_sft - 0.05, (f1_sft, ogdpo.evaluation.metrics["overall"])

    # The round's checkpoint can be made the active guard; its lineage leads back to the base.
    checkpoint = ogdpo.output_checkpoint
    checkpoint_activate(checkpoint)
    assert GuardCheckpoint.objects.get(is_active=True) == checkpoint
    assert [ogdpo.parent, ogdpo.parent.parent] == [dpo, sft] and sft.base_checkpoint == base

    # Ablation in miniature: the same SFT without the reasoning, and without the image.
    full = loop.accuracy_by_kind(world, loop.judge_test_set(sft.output_checkpoint.path))
    qa = _launch_and_run(stage="sft", base_checkpoint=base, hyperparameters={"prompt_variant": "qa"})
    qa_only = loop.accuracy_by_kind(world, loop.judge_test_set(qa.output_checkpoint.path, variant="qa"))
    blind = _launch_and_run(stage="sft", base_checkpoint=base, hyperparameters={"withhold_image": True})
    no_image = loop.accuracy_by_kind(
        world, loop.judge_test_set(blind.output_checkpoint.path, withhold_image=True)
    )
    assert full["reasoning_only"] > 0.85 and full["image_only"] > 0.85, full
    assert qa_only["reasoning_only"] < full["reasoning_only"] - 0.2, (qa_only, full)
    assert no_image["image_only"] < full["image_only"] - 0.2, (no_image, full)
