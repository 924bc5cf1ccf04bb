"""A checkpoint no longer points at the round that made it: TrainingRun.output_checkpoint holds that now (training
migration 0005 copied it)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("guardmodel", "0004_prompt_templates"),
        ("training", "0005_output_checkpoint_copied"),
    ]

    operations = [
        migrations.RemoveField(model_name="guardcheckpoint", name="produced_by"),
    ]
