"""The expert queue, its slots and skips, and the reviewers' decisions leave annotation for the experts app. Their
tables keep their names and rows (the experts models name them), so only the migration state and the content types
(with their permissions and admin history) move."""

from django.db import migrations

MODELS = ("expertqueueitem", "expertslot", "expertskip", "reviewdecision")


def _move_content_types(apps, source: str, target: str) -> None:
    ContentType = apps.get_model("contenttypes", "ContentType")
    for model in MODELS:
        moving = ContentType.objects.filter(app_label=source, model=model).first()
        if moving is None:
            continue
        ContentType.objects.filter(app_label=target, model=model).delete()
        moving.app_label = target
        moving.save(update_fields=["app_label"])


def to_experts(apps, schema_editor):
    _move_content_types(apps, "annotation", "experts")


def back_to_annotation(apps, schema_editor):
    _move_content_types(apps, "experts", "annotation")


class Migration(migrations.Migration):
    dependencies = [
        ("annotation", "0011_long_work_status"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("experts", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveField(
                    model_name='expertskip',
                    name='item',
                ),
                migrations.RemoveField(
                    model_name='expertslot',
                    name='item',
                ),
                migrations.RemoveField(
                    model_name='expertskip',
                    name='expert',
                ),
                migrations.RemoveField(
                    model_name='expertslot',
                    name='expert',
                ),
                migrations.RemoveField(
                    model_name='expertslot',
                    name='label',
                ),
                migrations.RemoveField(
                    model_name='reviewdecision',
                    name='guard_label',
                ),
                migrations.RemoveField(
                    model_name='reviewdecision',
                    name='reviewer',
                ),
                migrations.RemoveField(
                    model_name='reviewdecision',
                    name='sample',
                ),
                migrations.DeleteModel(
                    name='ExpertQueueItem',
                ),
                migrations.DeleteModel(
                    name='ExpertSkip',
                ),
                migrations.DeleteModel(
                    name='ExpertSlot',
                ),
                migrations.DeleteModel(
                    name='ReviewDecision',
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(to_experts, back_to_annotation),
    ]
