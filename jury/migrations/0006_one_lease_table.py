"""Jurors' leases move to the one lease table (common.Lease, key `juror:<id>`), held leases included, so a driver
working through the upgrade keeps its juror."""

from django.db import migrations


def to_common(apps, schema_editor):
    Lease = apps.get_model("common", "Lease")
    JurorLease = apps.get_model("jury", "JurorLease")
    Lease.objects.bulk_create(
        [Lease(key=f"juror:{row.juror_id}", token=row.token, until=row.until) for row in JurorLease.objects.all()],
        ignore_conflicts=True,
    )


def back_to_jury(apps, schema_editor):
    Lease = apps.get_model("common", "Lease")
    JurorLease = apps.get_model("jury", "JurorLease")
    Juror = apps.get_model("jury", "Juror")
    jurors = set(Juror.objects.values_list("pk", flat=True))
    rows = []
    for lease in Lease.objects.filter(key__startswith="juror:"):
        juror_id = int(lease.key.removeprefix("juror:"))
        if juror_id in jurors:
            rows.append(JurorLease(juror_id=juror_id, token=lease.token, until=lease.until))
    JurorLease.objects.bulk_create(rows, ignore_conflicts=True)


class Migration(migrations.Migration):
    dependencies = [
        ("common", "0001_lease"),
        ("jury", "0005_long_work_status"),
    ]

    operations = [
        migrations.RunPython(to_common, back_to_jury),
        migrations.DeleteModel(name="JurorLease"),
    ]
