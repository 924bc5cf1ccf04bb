"""A real Celery worker runs API imports, over the filesystem broker and over Redis."""

from __future__ import annotations

import threading
import time
import zipfile
from pathlib import Path

import pytest
from django.db import connection
from django.urls import reverse

from annotation import services
from annotation.models import ImportJob, Sample
from qta.images import DirectoryImageSource
from qta.synthetic import generate
from tests.conftest import REDIS_URL
from tests.workers import filesystem_broker, kill_worker
from tests.workers import worker as _worker


def _upload(api, tmp_path: Path, count: int = 24):
    generate(tmp_path / "syn", count=count, seed=11)
    archive = tmp_path / "images.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for image in (tmp_path / "syn" / "images").iterdir():
            zf.write(image, f"images/{image.name}")
    with (tmp_path / "syn" / "samples.jsonl").open("rb") as data, archive.open("rb") as images:
        response = api.post(
            reverse("api_import_create"), {"file": data, "images": images}, format="multipart"
        )
    assert response.status_code == 202, response.content
    return response.json()["id"]


def _wait_for(job_id: int, worker, timeout: float = 60) -> ImportJob:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = ImportJob.objects.get(pk=job_id)
        if job.status in (ImportJob.Status.SUCCEEDED, ImportJob.Status.FAILED):
            return job
        assert worker.poll() is None, worker.stdout.read()
        time.sleep(0.3)
    raise AssertionError(f"import job {job_id} still {job.status} after {timeout}s")


def _run_import_through_worker(api, tmp_path, broker_url, options, settings):
    with _worker(broker_url, options, settings.MEDIA_ROOT) as worker:
        job_id = _upload(api, tmp_path)
        job = _wait_for(job_id, worker)
    assert job.status == "succeeded", job.errors
    assert job.created == 24 == Sample.objects.count()
    assert (
        Sample.objects.exclude(image=None)
        .first()
        .image.file.storage.exists(Sample.objects.exclude(image=None).first().image.file.name)
    )


@pytest.mark.django_db(transaction=True)
def test_a_worker_runs_api_imports_over_the_filesystem_broker(api_for, admin_user, tmp_path, settings):
    options = filesystem_broker(tmp_path)
    _run_import_through_worker(api_for(admin_user), tmp_path, "filesystem://", options, settings)


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_a_worker_runs_api_imports_over_redis(api_for, admin_user, tmp_path, settings):
    _run_import_through_worker(
        api_for(admin_user), tmp_path, REDIS_URL, {"visibility_timeout": 3600}, settings
    )


@pytest.mark.django_db
def test_an_import_job_runs_once_however_often_its_message_arrives(
    tmp_path, admin_user, django_capture_on_commit_callbacks
):
    generate(tmp_path, count=8, seed=2)
    from django.core.files.base import ContentFile

    job = ImportJob.objects.create(
        data_file=ContentFile((tmp_path / "samples.jsonl").read_bytes(), name="s.jsonl"),
        format="jsonl", created_by=admin_user,
    )  # fmt: skip
    # Text-only lines import; lines naming images fail because no archive came with the job.
    job.skip_invalid = True
    job.save()
    assert services.import_job_run(job_id=job.pk) is True
    assert services.import_job_run(job_id=job.pk) is False
    job.refresh_from_db()
    assert job.status == "succeeded" and job.created == Sample.objects.count() > 0
    assert any("no images folder or archive was given" in e for e in job.errors)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_imports_of_the_same_file_store_each_sample_once(tmp_path):
    generate(tmp_path, count=120, seed=4)
    data = (tmp_path / "samples.jsonl").read_bytes()
    reports, failures = [], []

    def run():
        try:
            reports.append(services.samples_import(data=data, name="s.jsonl", fmt="jsonl",
                                                   images=DirectoryImageSource(tmp_path)))  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - recorded for the assertion below
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert Sample.objects.count() == 120
    assert sum(r.created for r in reports) == 120
    assert sum(len(r.duplicates) for r in reports) == 240


@pytest.mark.django_db
def test_a_job_that_breaks_unexpectedly_is_marked_failed_not_left_running(admin_user):
    from django.core.files.base import ContentFile

    job = ImportJob.objects.create(
        data_file=ContentFile(b"{}", name="s.jsonl"), format="jsonl", created_by=admin_user
    )
    # The uploaded file has vanished from storage before the worker got to it.
    job.data_file.storage.delete(job.data_file.name)
    assert services.import_job_run(job_id=job.pk) is True
    job.refresh_from_db()
    assert job.status == "failed" and job.finished_at is not None
    assert job.errors[0].startswith("internal error: FileNotFoundError")
    assert job.error == job.errors[0]  # the job's own failure, apart from the file's errors
    assert services.import_job_run(job_id=job.pk) is False


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_an_import_killed_mid_run_is_run_again_by_the_next_worker_and_leaves_no_orphan_files(
    api_for, admin_user, tmp_path, settings
):
    from annotation.models import ImageAsset

    options = filesystem_broker(tmp_path)
    images = Path(settings.MEDIA_ROOT) / "images"
    with _worker("filesystem://", options, settings.MEDIA_ROOT) as first:
        job_id = _upload(api_for(admin_user), tmp_path, count=3000)
        deadline = time.monotonic() + 120
        # Killed while it writes image files, before its one transaction commits any row.
        while not (images.is_dir() and any(images.rglob("*.png"))):
            assert time.monotonic() < deadline and first.poll() is None, (
                "the import never started writing images"
            )
            time.sleep(0.02)
        kill_worker(first)
    stuck = ImportJob.objects.get(pk=job_id)
    assert stuck.status == "running" and Sample.objects.count() == 0 and ImageAsset.objects.count() == 0
    written_before = {p.relative_to(settings.MEDIA_ROOT).as_posix() for p in images.rglob("*.png")}
    with _worker("filesystem://", options, settings.MEDIA_ROOT) as second:
        job = _wait_for(job_id, second, timeout=180)
    assert job.status == "succeeded", job.errors
    assert job.created == 3000 == Sample.objects.count()
    on_disk = {p.relative_to(settings.MEDIA_ROOT).as_posix() for p in images.rglob("*.*")}
    stored = set(ImageAsset.objects.values_list("file", flat=True))
    assert (
        on_disk == stored and written_before <= stored
    )  # every file has its row; the first run's were reused


@pytest.mark.django_db
def test_only_imports_whose_worker_is_gone_or_past_the_time_limit_are_queued_again(admin_user, settings):
    from datetime import timedelta

    from django.core.files.base import ContentFile
    from django.utils import timezone

    from qta.workers import worker_id

    now = timezone.now()

    def job(worker: str, started_ago_s: float, status: str = "running") -> ImportJob:
        return ImportJob.objects.create(
            data_file=ContentFile(b"{}", name="s.jsonl"), format="jsonl", created_by=admin_user, status=status,
            worker=worker, started_at=now - timedelta(seconds=started_ago_s),
        )  # fmt: skip

    host = worker_id().rpartition(":")[0]
    dead_here = job(f"{host}:{2**22 + 12345}", 5)  # no such process
    alive_here = job(worker_id(), 5)
    busy_elsewhere = job("other-host:17", 60)
    silent_elsewhere = job("other-host:18", settings.GUARDTRACE_IMPORT_STALE_S + 60)
    waiting = job("", 0, status="pending")
    done = job("other-host:19", 9999, status="succeeded")
    queued = services.import_jobs_resume()
    assert sorted(queued) == sorted([dead_here.pk, silent_elsewhere.pk, waiting.pk])
    statuses = dict(ImportJob.objects.values_list("pk", "status"))
    assert (
        statuses[alive_here.pk] == statuses[busy_elsewhere.pk] == "running"
        and statuses[done.pk] == "succeeded"
    )
