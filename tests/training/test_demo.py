"""`make run`'s demo commands, as the Makefile runs them: three tiny jurors trained offline (once) fill every stratum,
and a finished SFT round shows the guard learning. Every label comes from a juror model generating its reply."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from annotation.models import Label, Sample, Stratum
from demo.tiny_models import DEMO_JURORS, MARKER
from experts.models import ExpertQueueItem
from guardmodel.models import Evaluation, GuardCheckpoint
from jury.models import Juror, JuryRun
from training.models import TrainingRun

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_the_demo_trains_its_jurors_once_fills_every_stratum_and_shows_a_finished_sft_round(
    settings, tmp_path
):
    settings.VAR_DIR = tmp_path / "var"
    settings.GUARDTRACE_TRAIN_THREADS = 0
    call_command("demo_setup", count=240)
    call_command("demo_guard")
    call_command("demo_jury")

    models = settings.VAR_DIR / "models"
    assert {j.name for j in Juror.objects.all()} == set(DEMO_JURORS)
    assert all((models / name / MARKER).is_file() for name in DEMO_JURORS)
    run = JuryRun.objects.get()
    assert run.status == "succeeded"
    juror_labels = Label.objects.filter(source_kind="juror")
    assert juror_labels.count() == 3 * Sample.objects.count()
    # Trained jurors answer in the protocol's format (an untrained tiny model would not).
    assert juror_labels.filter(status="valid").count() > 0.95 * juror_labels.count()
    strata = {value: Sample.objects.filter(stratum=value).count() for value in Stratum.values}
    assert strata[Stratum.D3_0] > 120 and strata[Stratum.D2_1] > 0 and strata[Stratum.D1_1_1] > 0, strata
    assert ExpertQueueItem.objects.filter(sample__stratum=Stratum.D1_1_1).count() == strata[Stratum.D1_1_1]
    # The demo's expert panel has decided items (a reliability check among them), so the agreement, adjudication
    # and reliability pages have something to show; the reviewer-sent items wait for the demo expert.
    assert ExpertQueueItem.objects.filter(reason="reliability", status="done").exists()
    assert ExpertQueueItem.objects.filter(status="done").count() >= 5
    assert ExpertQueueItem.objects.filter(reason="reviewer", status="open").count() == 12

    call_command("demo_training")
    sft = TrainingRun.objects.get()
    assert sft.stage == "sft" and sft.status == "succeeded", sft.error
    untrained = Evaluation.objects.get(source_kind="guard", source_name="tiny-guard")
    assert sft.evaluation is not None, sft.evaluation_error
    f1_before = untrained.metrics["average"]["f1"] or 0.0
    f1_after = sft.evaluation.metrics["average"]["f1"]
    assert f1_after > 0.75 and f1_after > f1_before + 0.4, (f1_before, f1_after)
    assert GuardCheckpoint.objects.get(is_active=True) == sft.output_checkpoint

    # Run again (a second `make run`): nothing is trained or judged twice.
    trained_at = {name: (models / name / MARKER).stat().st_mtime_ns for name in DEMO_JURORS}
    call_command("demo_jury")
    call_command("demo_training")
    assert {name: (models / name / MARKER).stat().st_mtime_ns for name in DEMO_JURORS} == trained_at
    assert JuryRun.objects.count() == 1 and TrainingRun.objects.count() == 1


def test_the_demo_builds_qta_data_from_text_queries_with_its_own_reasoning_model(settings, tmp_path):
    from demo.tiny_models import DEMO_REASONER
    from generation.models import Expansion, GenerationRun, GenerationTask, SeedSet, Variant

    settings.VAR_DIR = tmp_path / "var"
    settings.GUARDTRACE_TRAIN_THREADS = 0
    settings.GUARDTRACE_EMBEDDING_MODEL = ""  # the demo builds its tiny sentence model under var/models/
    call_command("demo_generation")

    seeds = SeedSet.objects.get(name="demo-seeds")
    assert Expansion.objects.get().status == "succeeded"
    kinds = set(Variant.objects.filter(seed__seed_set=seeds).values_list("kind", flat=True))
    assert kinds == {"text_only", "irrelevant_image", "aligned_image", "typographic"}
    assert Variant.objects.count() == 4 * seeds.queries.count()
    run = GenerationRun.objects.get()
    assert run.status == "succeeded" and run.total == 24
    tasks = GenerationTask.objects.filter(run=run)
    # The trained reasoning model mostly answers <think>reasoning</think> answer, so its replies separate.
    assert tasks.filter(status="done").count() >= 0.6 * run.total
    assert tasks.filter(status__in=["done", "flagged"]).count() == run.total
    sample = tasks.filter(status="done").first().sample
    assert sample.thinking and sample.subset == "demo-generated"
    assert sample.provenance["generator"]["name"] == DEMO_REASONER
    assert sample.provenance["seed"]["set"] == "demo-seeds" and sample.provenance["reasoning"] == "think_tags"

    marker = settings.VAR_DIR / "models" / DEMO_REASONER / MARKER
    trained_at = marker.stat().st_mtime_ns
    call_command("demo_generation")  # a second `make run`: nothing trained, imported or generated twice
    assert marker.stat().st_mtime_ns == trained_at
    assert SeedSet.objects.count() == 1 and GenerationRun.objects.count() == 1
