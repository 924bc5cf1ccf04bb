"""Lineage points down: a round records the checkpoint it made (0005 copies it from GuardCheckpoint.produced_by)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("guardmodel", "0004_prompt_templates"),
        ("training", "0003_run_truncation"),
    ]

    operations = [
        migrations.AddField(
            model_name="trainingrun",
            name="output_checkpoint",
            field=models.OneToOneField(blank=True, help_text="The checkpoint this round made.", null=True, on_delete=django.db.models.deletion.SET_NULL, related_name="made_by", to="guardmodel.guardcheckpoint"),
        ),
    ]
