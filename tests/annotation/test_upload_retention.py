"""Upload retention: the files an import was uploaded with are deleted once the import has been over for
GUARDTRACE_UPLOAD_RETENTION_HOURS (succeeded, failed or cancelled), files under media/imports/ that no import names
once as old; a queued or running import keeps its files, and the job records that its upload was deleted."""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from annotation import services
from annotation.models import ImportJob, Sample
from annotation.tasks import import_job_run_task
from common.work import resume_all
from tests.conftest import record

Status = ImportJob.Status


def _job(status: str, *, hours_ago: float, images: bool = False) -> ImportJob:
    """A job created (and, when over, ended) `hours_ago`, with its uploaded file(s) on disk."""
    job = ImportJob.objects.create(
        data_file=ContentFile(b'{"question": "q"}\n', name="rows.jsonl"),
        images_archive=ContentFile(b"PK\x05\x06" + bytes(18), name="images.zip") if images else "",
        original_name="rows.jsonl",
        format="jsonl",
    )
    when = timezone.now() - timedelta(hours=hours_ago)
    over = status in (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)
    started = when if status != Status.PENDING else None
    ImportJob.objects.filter(pk=job.pk).update(
        status=status,
        created_at=when,
        started_at=started,
        heartbeat_at=started,
        finished_at=when if over else None,
    )
    job.refresh_from_db()
    return job


def _paths(job: ImportJob) -> list[Path]:
    return [Path(f.path) for f in (job.data_file, job.images_archive) if f]


def _orphan(media: Path, name: str, *, hours_ago: float) -> Path:
    path = media / "imports" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"left by an upload whose row was never written")
    then = time.time() - hours_ago * 3600
    os.utime(path, (then, then))
    return path


@pytest.mark.django_db
def test_it_deletes_ended_uploads_past_the_retention_and_keeps_younger_ones(settings):
    settings.GUARDTRACE_UPLOAD_RETENTION_HOURS = 24
    old = [
        _job(Status.SUCCEEDED, hours_ago=30),
        _job(Status.FAILED, hours_ago=30, images=True),
        _job(Status.CANCELLED, hours_ago=25),
    ]
    young = _job(Status.FAILED, hours_ago=2, images=True)
    old_paths = [path for job in old for path in _paths(job)]
    assert len(old_paths) == 4 and all(path.is_file() for path in old_paths)

    report = services.import_uploads_purge()

    assert report.jobs == 3 and report.orphans == 0 and report.freed_bytes > 0
    assert not any(path.exists() for path in old_paths)
    for job in old:
        job.refresh_from_db()
        assert job.upload_purged_at is not None
        assert not job.data_file and not job.images_archive
        assert job.status in (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)  # the record stays as it was
        assert job.original_name == "rows.jsonl"
    young.refresh_from_db()
    assert young.upload_purged_at is None and all(path.is_file() for path in _paths(young))
    # Run again: nothing more to do.
    assert services.import_uploads_purge().jobs == 0


@pytest.mark.django_db
def test_queued_running_and_interrupted_imports_keep_their_files_however_old(settings):
    settings.GUARDTRACE_UPLOAD_RETENTION_HOURS = 1
    kept = [
        _job(Status.PENDING, hours_ago=100),
        _job(Status.RUNNING, hours_ago=100, images=True),
        _job(Status.INTERRUPTED, hours_ago=100),
    ]

    assert services.import_uploads_purge().jobs == 0

    for job in kept:
        job.refresh_from_db()
        assert job.upload_purged_at is None and all(path.is_file() for path in _paths(job))


@pytest.mark.django_db
def test_orphan_files_past_the_retention_are_deleted(settings, _media):
    settings.GUARDTRACE_UPLOAD_RETENTION_HOURS = 24
    running = _job(Status.RUNNING, hours_ago=50)
    old_orphan = _orphan(_media, "crashed_before_its_row.jsonl", hours_ago=30)
    young_orphan = _orphan(_media, "being_uploaded.jsonl", hours_ago=1)

    report = services.import_uploads_purge()

    assert report.orphans == 1 and not old_orphan.exists()
    assert young_orphan.is_file() and all(path.is_file() for path in _paths(running))


@pytest.mark.django_db
def test_even_with_no_retention_a_just_stored_upload_without_its_row_is_kept(settings, _media):
    settings.GUARDTRACE_UPLOAD_RETENTION_HOURS = 0
    ended = _job(Status.FAILED, hours_ago=0.01)
    just_stored = _orphan(_media, "row_not_committed_yet.jsonl", hours_ago=0.1)

    report = services.import_uploads_purge()

    assert report.jobs == 1 and not any(path.exists() for path in _paths(ended))
    assert report.orphans == 0 and just_stored.is_file()


@pytest.mark.django_db
def test_the_api_and_the_admin_show_the_upload_was_deleted_and_it_cannot_be_queued_again(
    settings, api_for, client_for, admin_user
):
    settings.GUARDTRACE_UPLOAD_RETENTION_HOURS = 24
    job = _job(Status.FAILED, hours_ago=48)
    call_command("purge_uploads", verbosity=0)
    job.refresh_from_db()

    api = api_for(admin_user)
    detail = api.get(reverse("api_import_detail", args=[job.pk]))
    assert detail.status_code == 200 and detail.json()["upload_purged_at"] is not None
    resume = api.post(reverse("api_import_resume", args=[job.pk]))
    assert resume.status_code == 409 and "deleted" in resume.json()["status"][0]
    job.refresh_from_db()
    assert job.status == Status.FAILED

    admin_user.is_superuser = True
    admin_user.save()
    page = client_for(admin_user).get(reverse("admin:annotation_importjob_change", args=[job.pk]))
    assert page.status_code == 200
    assert b"Upload purged at" in page.content and b"rows.jsonl" in page.content


@pytest.mark.django_db
def test_the_command_takes_the_retention_in_hours(settings):
    settings.GUARDTRACE_UPLOAD_RETENTION_HOURS = 24
    job = _job(Status.SUCCEEDED, hours_ago=3)
    call_command("purge_uploads", "--hours", "4", verbosity=0)
    assert all(path.is_file() for path in _paths(job))

    call_command("purge_uploads", "--hours", "2", verbosity=0)
    job.refresh_from_db()
    assert job.upload_purged_at is not None


@pytest.mark.django_db
def test_a_worker_deletes_old_uploads_as_it_starts_and_after_each_import(settings, tmp_path):
    settings.GUARDTRACE_UPLOAD_RETENTION_HOURS = 24
    first, second = _job(Status.FAILED, hours_ago=30), _job(Status.SUCCEEDED, hours_ago=30)
    ImportJob.objects.filter(pk=second.pk).update(finished_at=timezone.now())  # not yet past the retention

    resume_all()  # what a starting worker runs
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.upload_purged_at is not None and second.upload_purged_at is None

    ImportJob.objects.filter(pk=second.pk).update(finished_at=timezone.now() - timedelta(hours=30))
    rows = "".join(json.dumps(record(question=f"Q{n}?")) + "\n" for n in range(2)).encode()
    new = ImportJob.objects.create(data_file=ContentFile(rows, name="new.jsonl"), format="jsonl")
    assert import_job_run_task(new.pk) is True  # the task's body, as the worker runs it

    new.refresh_from_db()
    second.refresh_from_db()
    assert new.status == Status.SUCCEEDED and Sample.objects.count() == 2
    assert second.upload_purged_at is not None
    # The import that just ended keeps its file for the retention time.
    assert new.upload_purged_at is None and Path(new.data_file.path).is_file()
