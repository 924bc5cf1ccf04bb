"""Preference pairs move from the jury to the strata (annotation): the same rows, the table renamed, the content
type re-pointed so permissions and admin history stay with them."""

import django.db.models.deletion
from django.db import migrations, models


def _move_content_type(apps, source: str, target: str) -> None:
    """The source app's content type for pairs becomes the target's (with its permissions); a stale target one,
    left by an earlier migrate, goes."""
    ContentType = apps.get_model("contenttypes", "ContentType")
    moving = ContentType.objects.filter(app_label=source, model="preferencepair").first()
    if moving is None:
        return
    ContentType.objects.filter(app_label=target, model="preferencepair").delete()
    moving.app_label = target
    moving.save(update_fields=["app_label"])


def repoint_content_type(apps, schema_editor):
    _move_content_type(apps, "jury", "annotation")


def point_back(apps, schema_editor):
    _move_content_type(apps, "annotation", "jury")


class Migration(migrations.Migration):
    dependencies = [
        ("annotation", "0008_import_job_names_and_defaults"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("jury", "0003_base_url_accepts_service_names"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="PreferencePair",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("prompt_version", models.CharField(max_length=32)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("chosen", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="+", to="annotation.label")),
                        ("rejected", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="+", to="annotation.label")),
                        ("sample", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="preference_pairs", to="annotation.sample")),
                    ],
                    options={
                        "ordering": ["sample_id"],
                        "constraints": [
                            models.UniqueConstraint(fields=("sample", "prompt_version"), name="one_pair_per_sample_version")
                        ],
                    },
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    "ALTER TABLE jury_preferencepair RENAME TO annotation_preferencepair",
                    "ALTER TABLE annotation_preferencepair RENAME TO jury_preferencepair",
                ),
            ],
        ),
        migrations.RunPython(repoint_content_type, point_back),
    ]
