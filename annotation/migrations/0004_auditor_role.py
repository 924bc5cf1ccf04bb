from django.db import migrations


def create_role(apps, schema_editor):
    apps.get_model("auth", "Group").objects.get_or_create(name="auditor")


def remove_role(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name="auditor").delete()


class Migration(migrations.Migration):
    dependencies = [("annotation", "0003_label_error_label_meta")]
    operations = [migrations.RunPython(create_role, remove_role)]
