"""Each round's output checkpoint, copied from GuardCheckpoint.produced_by before guardmodel drops it (a migration of
its own: on PostgreSQL the copy's deferred checks must be done before a table is altered)."""

from django.db import migrations


def copy_forward(apps, schema_editor):
    GuardCheckpoint = apps.get_model("guardmodel", "GuardCheckpoint")
    TrainingRun = apps.get_model("training", "TrainingRun")
    # The first checkpoint each round made (a round only ever registers one).
    for checkpoint in GuardCheckpoint.objects.filter(produced_by__isnull=False).order_by("-pk"):
        TrainingRun.objects.filter(pk=checkpoint.produced_by_id).update(output_checkpoint=checkpoint)


def copy_back(apps, schema_editor):
    GuardCheckpoint = apps.get_model("guardmodel", "GuardCheckpoint")
    TrainingRun = apps.get_model("training", "TrainingRun")
    for run in TrainingRun.objects.filter(output_checkpoint__isnull=False):
        GuardCheckpoint.objects.filter(pk=run.output_checkpoint_id).update(produced_by=run)


class Migration(migrations.Migration):
    dependencies = [
        ("guardmodel", "0004_prompt_templates"),
        ("training", "0004_output_checkpoint"),
    ]

    operations = [migrations.RunPython(copy_forward, copy_back)]
