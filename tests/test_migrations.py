"""A database populated under the previous schema keeps every row through the model moves: preference pairs from the
jury to annotation (table renamed, content type and permissions re-pointed), the expert queue and reviewers'
decisions from annotation to experts (tables kept, content types re-pointed), jurors' leases into the one lease
table, and lineage turned around
(GuardCheckpoint.produced_by → TrainingRun.output_checkpoint). Both ways, on SQLite and on PostgreSQL under CI."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

BEFORE = [
    ("annotation", "0008_import_job_names_and_defaults"),
    ("jury", "0003_base_url_accepts_service_names"),
    ("guardmodel", "0004_prompt_templates"),
    ("training", "0003_run_truncation"),
]


def _migrate(targets) -> object:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def _latest() -> list[tuple[str, str]]:
    executor = MigrationExecutor(connection)
    return executor.loader.graph.leaf_nodes()


@pytest.mark.django_db(transaction=True)
def test_pairs_and_lineage_survive_the_moves_both_ways():
    from django.contrib.auth.models import Permission
    from django.contrib.contenttypes.models import ContentType

    latest = _latest()
    old = _migrate(BEFORE)
    Sample, Label = old.get_model("annotation", "Sample"), old.get_model("annotation", "Label")
    sample = Sample.objects.create(question="q", thinking="t", answer="a", content_hash="e" * 64)
    labels = [
        Label.objects.create(
            sample=sample,
            source_kind="juror",
            source_name=name,
            prompt_version="qta-v1",
            judgment=judgment,
            created_at=timezone.now(),
        )  # fmt: skip
        for name, judgment in (("a", 0.0), ("b", 0.0), ("c", 1.0))
    ]
    old.get_model("jury", "PreferencePair").objects.create(
        sample=sample, prompt_version="qta-v1", chosen=labels[0], rejected=labels[2]
    )
    jury_type, _ = ContentType.objects.get_or_create(app_label="jury", model="preferencepair")
    permission = Permission.objects.create(content_type=jury_type, codename="view_pairs_x", name="x")
    Checkpoint, Run = old.get_model("guardmodel", "GuardCheckpoint"), old.get_model("training", "TrainingRun")
    base = Checkpoint.objects.create(name="base", path="/base")
    run = Run.objects.create(stage="sft", status="succeeded", base_checkpoint=base)
    Checkpoint.objects.create(name="sft-run-1", path="/out", produced_by=run)
    unfinished = Run.objects.create(stage="sft", status="failed", base_checkpoint=base)
    User = old.get_model("auth", "User")
    expert = User.objects.create(username="expert-x")
    Item = old.get_model("annotation", "ExpertQueueItem")
    item = Item.objects.create(sample=sample, reason="jury_split", prompt_version="qta-v1", labels_needed=2)
    slot = old.get_model("annotation", "ExpertSlot").objects.create(
        item=item, round=1, index=0, status="claimed", expert=expert, claim_token="t"
    )
    old.get_model("annotation", "ExpertSkip").objects.create(item=item, round=1, expert=expert)
    old.get_model("annotation", "ReviewDecision").objects.create(
        sample=sample, verdict="guard_wrong", guard_name="g", guard_judgment=1.0, label_judgment=0.0,
        label_origin="jury_majority", reviewer=expert,
    )  # fmt: skip
    item_type, _ = ContentType.objects.get_or_create(app_label="annotation", model="expertqueueitem")
    item_permission = Permission.objects.create(content_type=item_type, codename="see_items_x", name="x")
    juror = old.get_model("jury", "Juror").objects.create(
        name="juror-x", backend="transformers", model_name="/m"
    )
    held_until = timezone.now()
    old.get_model("jury", "JurorLease").objects.create(juror=juror, token="held", until=held_until)

    new = _migrate(latest)
    pair = new.get_model("annotation", "PreferencePair").objects.get()
    assert (pair.sample_id, pair.chosen_id, pair.rejected_id) == (sample.pk, labels[0].pk, labels[2].pk)
    permission.refresh_from_db()
    assert permission.content_type.app_label == "annotation"
    runs = new.get_model("training", "TrainingRun").objects.order_by("pk")
    assert [(r.pk, r.output_checkpoint.name if r.output_checkpoint else None) for r in runs] == [
        (run.pk, "sft-run-1"), (unfinished.pk, None)
    ]  # fmt: skip
    moved = new.get_model("experts", "ExpertQueueItem").objects.get()
    assert (moved.pk, moved.sample_id, moved.labels_needed) == (item.pk, sample.pk, 2)
    assert [(s.pk, s.expert_id) for s in moved.slots.all()] == [(slot.pk, expert.pk)]
    assert moved.skips.count() == 1
    assert new.get_model("experts", "ReviewDecision").objects.get().verdict == "guard_wrong"
    item_permission.refresh_from_db()
    assert item_permission.content_type.app_label == "experts"
    lease = new.get_model("common", "Lease").objects.get(key=f"juror:{juror.pk}")
    assert (lease.token, lease.until) == ("held", held_until)

    back = _migrate(BEFORE)
    assert back.get_model("jury", "PreferencePair").objects.get().chosen_id == labels[0].pk
    made = back.get_model("guardmodel", "GuardCheckpoint").objects.get(name="sft-run-1")
    assert made.produced_by_id == run.pk
    assert back.get_model("annotation", "ExpertSlot").objects.get().item_id == item.pk
    item_permission.refresh_from_db()
    assert item_permission.content_type.app_label == "annotation"
    assert back.get_model("jury", "JurorLease").objects.get(juror_id=juror.pk).token == "held"
    _migrate(latest)


BEFORE_LONG_WORK = [
    ("annotation", "0012_expert_models_move_to_experts"),
    ("generation", "0005_expansion_worker"),
    ("guardmodel", "0008_guard_job_evaluation"),
    ("jury", "0006_one_lease_table"),
    ("training", "0005_output_checkpoint_copied"),
]


@pytest.mark.django_db(transaction=True)
def test_long_work_keeps_its_rows_progress_and_signs_of_life_on_the_shared_model_both_ways():
    latest = _latest()
    old = _migrate(BEFORE_LONG_WORK)
    User = old.get_model("auth", "User")
    admin = User.objects.create(username="admin-x")
    Sample = old.get_model("annotation", "Sample")
    samples = [
        Sample.objects.create(question="q", thinking="t", answer="a", content_hash=c * 64) for c in "fed"
    ]
    juror = old.get_model("jury", "Juror").objects.create(
        name="juror-y", backend="transformers", model_name="/m"
    )
    jury_run = old.get_model("jury", "JuryRun").objects.create(status="running", total=3, created_by=admin)
    JuryTask = old.get_model("jury", "JuryTask")
    for sample, status in zip(samples, ("valid", "failed", "pending"), strict=True):
        JuryTask.objects.create(run=jury_run, sample=sample, juror=juror, status=status)
    seed = old.get_model("generation", "SeedQuery").objects.create(
        seed_set=old.get_model("generation", "SeedSet").objects.create(name="s"), text="How?", line=1
    )
    variant = old.get_model("generation", "Variant").objects.create(seed=seed, kind="text_only", key="k")
    generator = old.get_model("generation", "Generator").objects.create(
        name="gen-y", backend="transformers", model_name="/m"
    )
    generation_run = old.get_model("generation", "GenerationRun").objects.create(total=2)
    GenerationTask = old.get_model("generation", "GenerationTask")
    for index, status in enumerate(("flagged", "claimed")):
        GenerationTask.objects.create(
            run=generation_run, variant=variant, generator=generator, sample_index=index, status=status
        )
    expansion = old.get_model("generation", "Expansion").objects.create(
        status="running", total=4, done=2, worker="host-y:7"
    )
    last_progress = old.get_model("generation", "Expansion").objects.get().updated_at
    import_job = old.get_model("annotation", "ImportJob").objects.create(
        data_file="imports/r.json", format="guardtrace", status="running", worker="host-y:8",
        started_at=timezone.now(), created_by=admin,
    )  # fmt: skip

    new = _migrate(latest)
    moved_run = new.get_model("jury", "JuryRun").objects.get(pk=jury_run.pk)
    assert (moved_run.done, moved_run.total, moved_run.created_by_id) == (2, 3, admin.pk)
    assert moved_run.started_at == moved_run.created_at
    moved_generation = new.get_model("generation", "GenerationRun").objects.get(pk=generation_run.pk)
    assert (moved_generation.done, moved_generation.total) == (1, 2)
    moved_expansion = new.get_model("generation", "Expansion").objects.get(pk=expansion.pk)
    assert (moved_expansion.heartbeat_at, moved_expansion.done, moved_expansion.worker) == (
        last_progress, 2, "host-y:7"
    )  # fmt: skip
    moved_import = new.get_model("annotation", "ImportJob").objects.get(pk=import_job.pk)
    assert (moved_import.status, moved_import.worker, moved_import.created_by_id) == (
        "running",
        "host-y:8",
        admin.pk,
    )
    assert (moved_import.done, moved_import.total, moved_import.error) == (0, 0, "")

    back = _migrate(BEFORE_LONG_WORK)
    assert back.get_model("generation", "Expansion").objects.get(pk=expansion.pk).updated_at == last_progress
    assert back.get_model("jury", "JuryTask").objects.filter(run_id=jury_run.pk).count() == 3
    assert back.get_model("annotation", "ImportJob").objects.get(pk=import_job.pk).worker == "host-y:8"
    _migrate(latest)
