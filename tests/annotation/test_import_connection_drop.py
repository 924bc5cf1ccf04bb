"""An import whose database connection the server drops (PostgreSQL's pg_terminate_backend, fired by a trigger at
a chosen statement) ends failed — never left *running* — stores nothing, leaves no image file without its row, and
runs to completion when resumed."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from django.core.files import File
from django.db import connection

from annotation import services
from annotation.models import ImageAsset, ImportJob, Sample
from qta.synthetic import generate

# Each trigger ends the session that runs the statement it watches, as an administrator (or a failover) would.
DROP_WHILE_CHECKING = """
CREATE FUNCTION soak_drop() RETURNS trigger AS $$
BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NEW; END $$ LANGUAGE plpgsql;
CREATE TRIGGER soak_drop BEFORE UPDATE ON annotation_importjob FOR EACH ROW
WHEN (OLD.total = 0 AND NEW.total > 0) EXECUTE FUNCTION soak_drop();
"""
DROP_WHILE_STORING = """
CREATE FUNCTION soak_drop() RETURNS trigger AS $$
BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NULL; END $$ LANGUAGE plpgsql;
CREATE TRIGGER soak_drop BEFORE INSERT ON annotation_sample FOR EACH STATEMENT EXECUTE FUNCTION soak_drop();
"""
TRIGGERS_GONE = """
DROP TRIGGER IF EXISTS soak_drop ON annotation_importjob;
DROP TRIGGER IF EXISTS soak_drop ON annotation_sample;
DROP FUNCTION IF EXISTS soak_drop();
"""


def _job(tmp_path: Path, user) -> ImportJob:
    generate(tmp_path / "syn", count=40, seed=5)
    archive = tmp_path / "images.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for image in (tmp_path / "syn" / "images").iterdir():
            zf.write(image, f"images/{image.name}")
    with (tmp_path / "syn" / "samples.jsonl").open("rb") as data, archive.open("rb") as images:
        return services.import_job_create(
            data_file=File(data, name="samples.jsonl"), images_archive=File(images, name="images.zip"),
            fmt="jsonl", skip_invalid=False, user=user,
        )  # fmt: skip


def _image_files(media: Path) -> set[str]:
    folder = media / "images"
    return (
        {p.relative_to(media).as_posix() for p in folder.rglob("*") if p.is_file()}
        if folder.is_dir()
        else set()
    )


def _run_with_connection_dropped(job: ImportJob, trigger: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(trigger)
    try:
        assert services.import_job_run(job_id=job.pk) is True
    finally:
        connection.close()  # the trigger's victim, if it still stands
        with connection.cursor() as cursor:
            cursor.execute(TRIGGERS_GONE)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("trigger", [DROP_WHILE_CHECKING, DROP_WHILE_STORING], ids=["checking", "storing"])
def test_an_import_whose_connection_drops_fails_leaves_nothing_and_resumes(
    trigger, tmp_path, admin_user, _media, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks():  # the job runs here, not on a worker
        job = _job(tmp_path, admin_user)
    _run_with_connection_dropped(job, trigger)

    job.refresh_from_db()
    assert job.status == "failed", job.status  # was left "running" for ever while its worker lived on
    assert "connection" in job.error.lower(), job.error
    assert Sample.objects.count() == 0 and ImageAsset.objects.count() == 0
    assert _image_files(_media) == set()  # the rolled-back store's files went with it

    with django_capture_on_commit_callbacks():
        assert services.import_job_resume(job) is True
    assert services.import_job_run(job_id=job.pk) is True
    job.refresh_from_db()
    assert job.status == "succeeded", job.errors
    assert job.created == 40 == Sample.objects.count()
    assert _image_files(_media) == set(ImageAsset.objects.values_list("file", flat=True)) != set()
