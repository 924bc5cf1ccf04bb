"""Preference pairs now belong to annotation (its migration 0009 took the table): the jury forgets the model."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("jury", "0003_base_url_accepts_service_names"),
        ("annotation", "0009_preference_pairs"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[migrations.DeleteModel(name="PreferencePair")]),
    ]
