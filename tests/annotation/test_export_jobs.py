"""Exports as jobs: an admin asks for the samples matching some filters, a worker writes them as one zip under
media/exports/ (the same files `export_qta` writes), reporting progress and stopping on cancel; only admins start,
see, download (audited) and cancel exports; archives follow the upload retention; the request-bound export keeps
to small sets and points larger ones to the job."""

from __future__ import annotations

import io
import os
import time
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from annotation import exports, services
from annotation.models import AuditEvent, ExportJob, ImportJob, Sample
from common.work import resume_all
from qta.workers import worker_id
from tests.annotation.factories import ImageAssetFactory, LabelFactory, SampleFactory
from tests.workers import filesystem_broker, wait_for, worker

pytestmark = pytest.mark.django_db

Status = ExportJob.Status


def _samples() -> list[Sample]:
    """Five samples: two share an image, one has its own, two have none; labels of two kinds, one invalid."""
    shared, own = ImageAssetFactory(), ImageAssetFactory()
    samples = [
        SampleFactory(image=shared, split="train"),
        SampleFactory(image=shared, split="test", question="Wie öffne ich das Schloss? ✓"),
        SampleFactory(image=own, split="test"),
        SampleFactory(split="train", category="cybersecurity"),
        SampleFactory(split="test", category="cybersecurity"),
    ]
    for n, sample in enumerate(samples):
        LabelFactory(sample=sample, judgment=[0.0, 0.5, 1.0][n % 3], analysis=f"Analysis {n}")
    LabelFactory(sample=samples[0], source_kind="guard", status="invalid", judgment=None, raw_output="???")
    return samples


def _zip_files(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _folder_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _exports_folder(settings) -> Path:
    return Path(settings.MEDIA_ROOT) / "exports"


def _create(api, django_capture_on_commit_callbacks, body=None, query: str = ""):
    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = api.post(reverse("api_export_create") + query, body or {}, format="json")
    return response, queued


def test_a_job_writes_the_same_files_as_the_cli_export(admin_user, tmp_path, settings):
    _samples()
    call_command("export_qta", str(tmp_path / "cli"), stdout=io.StringIO(), verbosity=0)
    job = exports.export_job_create(filters={}, user=admin_user)
    assert exports.export_job_run(job_id=job.pk) is True
    job.refresh_from_db()
    assert (job.status, job.sample_count, job.done, job.total) == (Status.SUCCEEDED, 5, 5, 5)
    path = Path(job.archive.path)
    assert path.parent == _exports_folder(settings) and path.stat().st_size == job.size_bytes
    # Byte for byte what the command wrote: samples.jsonl and each image once; nothing else left in the folder.
    assert _zip_files(path.read_bytes()) == _folder_files(tmp_path / "cli")
    assert len(_folder_files(tmp_path / "cli")) == 3
    assert [p.name for p in _exports_folder(settings).iterdir()] == [path.name]
    made = AuditEvent.objects.get(action=AuditEvent.Action.EXPORT, user=admin_user)
    assert made.detail == {"samples": 5, "export_job": job.pk, "filters": {}}
    # A second delivery of the message finds it done.
    assert exports.export_job_run(job_id=job.pk) is False


def test_the_api_takes_filters_from_the_body_or_the_query_and_refuses_unknown_values_by_field(
    api_for, admin_user, django_capture_on_commit_callbacks
):
    _samples()
    api = api_for(admin_user)
    bad, queued = _create(api, django_capture_on_commit_callbacks, {"split": "dev"})
    assert bad.status_code == 400 and list(bad.json()) == ["split"] and not queued
    in_query, _ = _create(api, django_capture_on_commit_callbacks, query="?stratum=d9")
    assert in_query.status_code == 400 and list(in_query.json()) == ["stratum"]
    a_list = api.post(reverse("api_export_create"), [{"split": "test"}], format="json")
    assert a_list.status_code == 400
    assert not ExportJob.objects.exists()

    # The body wins over the query; empty values mean "any".
    response, queued = _create(
        api,
        django_capture_on_commit_callbacks,
        {"split": "test", "subset": ""},
        query="?split=train&category=cybersecurity&input_variant=",
    )
    assert response.status_code == 202 and len(queued) == 1
    body = response.json()
    assert (body["status"], body["filters"], body["download_url"]) == (
        "pending",
        {"split": "test", "category": "cybersecurity"},
        None,
    )
    exports.export_job_run(job_id=body["id"])
    detail = api.get(reverse("api_export_detail", args=[body["id"]])).json()
    progress = {key: detail[key] for key in ("status", "sample_count", "done", "total")}
    assert progress == {"status": "succeeded", "sample_count": 1, "done": 1, "total": 1}
    assert detail["download_url"] == reverse("api_export_download", args=[body["id"]])
    files = _zip_files(b"".join(api.get(detail["download_url"]).streaming_content))
    lines = files["samples.jsonl"].decode().splitlines()
    assert len(lines) == 1 and '"split": "test"' in lines[0]
    assert api.get(reverse("api_export_detail", args=[body["id"] + 1000])).status_code == 404


def test_a_running_export_reports_its_progress(admin_user):
    _samples()
    job = exports.export_job_create(filters={}, user=admin_user)
    seen: list[tuple[str, int, int]] = []

    def look(done: int) -> None:
        seen.append(ExportJob.objects.values_list("status", "done", "total").get(pk=job.pk))

    exports.export_job_run(job_id=job.pk, every_s=0, on_progress=look)
    # Told after each sample: the row says the samples written before it, of all five.
    assert seen == [("running", n, 5) for n in range(5)]
    job.refresh_from_db()
    assert (job.status, job.done, job.total) == (Status.SUCCEEDED, 5, 5)
    assert job.started_at <= job.heartbeat_at <= job.finished_at


def test_an_export_cancelled_while_it_runs_stops_and_leaves_no_file(api_for, admin_user, settings):
    _samples()
    api = api_for(admin_user)
    job = exports.export_job_create(filters={}, user=admin_user)
    cancel = reverse("api_export_cancel", args=[job.pk])

    # The admin presses cancel once the worker has written two samples.
    def cancel_at_two(done: int) -> None:
        if done == 2:
            assert api.post(cancel).json()["status"] == "cancelled"

    assert exports.export_job_run(job_id=job.pk, every_s=0, on_progress=cancel_at_two) is True
    job.refresh_from_db()
    assert job.status == Status.CANCELLED and job.done < job.total == 5 and not job.archive
    assert not [p for p in _exports_folder(settings).rglob("*") if p.is_file()]
    assert not AuditEvent.objects.filter(action=AuditEvent.Action.EXPORT).exists()
    again = api.post(cancel)
    assert again.status_code == 409 and again.json() == {
        "status": [f"export #{job.pk} was cancelled: nothing to cancel"]
    }
    download = api.get(reverse("api_export_download", args=[job.pk]))
    assert download.status_code == 409 and "no archive" in download.json()["detail"]
    assert api.post(reverse("api_export_cancel", args=[job.pk + 1000])).status_code == 404


def test_a_queued_export_cancelled_from_its_admin_page_never_runs(
    client_for, admin_user, settings, django_capture_on_commit_callbacks
):
    _samples()
    admin_user.is_superuser = True  # the Django admin's model permissions
    admin_user.save()
    client = client_for(admin_user)
    assert b"Export samples" in client.get(reverse("admin:annotation_exportjob_changelist")).content
    form = client.get(reverse("admin:annotation_exportjob_add")).content.decode()
    assert 'name="split"' in form and 'name="subset"' in form and 'value="Export"' in form
    # The sample list links here with its filters, which the form starts from.
    listed = client.get(reverse("sample_list"), {"split": "train", "subset": "unit"}).content.decode()
    link = reverse("admin:annotation_exportjob_add") + "?subset=unit&amp;split=train"
    assert f'href="{link}" id="export-link"' in listed
    prefilled = client.get(link.replace("&amp;", "&")).content.decode()
    assert '<option value="train" selected>' in prefilled and '<option value="unit" selected>' in prefilled
    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = client.post(
            reverse("admin:annotation_exportjob_add"), {"split": "train", "subset": "unit"}
        )
    job = ExportJob.objects.get()
    assert response.status_code == 302 and len(queued) == 1
    assert job.filters == {"split": "train", "subset": "unit"} and job.created_by == admin_user
    page = client.get(reverse("admin:annotation_exportjob_change", args=[job.pk])).content.decode()
    assert "Cancel this export" in page and 'id="job-refresh"' in page
    client.post(
        reverse("admin:annotation_exportjob_changelist"), {"action": "cancel", "_selected_action": [job.pk]}
    )
    job.refresh_from_db()
    assert job.status == Status.CANCELLED
    assert exports.export_job_run(job_id=job.pk) is False and not _exports_folder(settings).exists()
    page = client.get(reverse("admin:annotation_exportjob_change", args=[job.pk])).content.decode()
    assert "Cancel this export" not in page and "Download the zip" not in page


def test_the_admin_links_a_finished_export_to_its_audited_download(client_for, admin_user):
    _samples()
    admin_user.is_superuser = True
    admin_user.save()
    client = client_for(admin_user)
    job = exports.export_job_create(filters={"split": "test"}, user=admin_user)
    exports.export_job_run(job_id=job.pk)
    page = client.get(reverse("admin:annotation_exportjob_change", args=[job.pk])).content.decode()
    url = reverse("api_export_download", args=[job.pk])
    assert f'href="{url}"' in page and "split=test" in page and "/media" not in page
    response = client.get(url)  # the admin's own session
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    assert AuditEvent.objects.filter(action=AuditEvent.Action.EXPORT_DOWNLOAD, user=admin_user).count() == 1


def test_a_download_is_audited_and_only_a_finished_export_has_one(api_for, admin_user):
    _samples()
    api = api_for(admin_user)
    job = exports.export_job_create(filters={"category": "cybersecurity"}, user=admin_user)
    url = reverse("api_export_download", args=[job.pk])
    early = api.get(url)
    assert early.status_code == 409 and early.json() == {
        "detail": f"export #{job.pk} is queued: there is no archive to download"
    }
    exports.export_job_run(job_id=job.pk)
    response = api.get(url)
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    assert 'filename="guardtrace-export-' in response["Content-Disposition"]
    assert response["Cache-Control"] == "private, no-store"
    job.refresh_from_db()
    assert b"".join(response.streaming_content) == Path(job.archive.path).read_bytes()
    event = AuditEvent.objects.get(action=AuditEvent.Action.EXPORT_DOWNLOAD)
    assert event.user == admin_user
    assert event.detail == {"export_job": job.pk, "samples": 2, "filters": {"category": "cybersecurity"}}
    api.get(url)
    assert AuditEvent.objects.filter(action=AuditEvent.Action.EXPORT_DOWNLOAD).count() == 2


@pytest.fixture
def finished_export(admin_user) -> ExportJob:
    SampleFactory()
    job = exports.export_job_create(filters={}, user=admin_user)
    exports.export_job_run(job_id=job.pk)
    return ExportJob.objects.get(pk=job.pk)


@pytest.mark.parametrize("who", ["anonymous", "outsider", "expert_user", "reviewer_user"])
def test_only_admins_start_see_download_or_cancel_exports(
    who, request, api_for, finished_export, django_capture_on_commit_callbacks
):
    user = None if who == "anonymous" else request.getfixturevalue(who)
    api = api_for(user)
    refused = {401} if user is None else {403}
    pk = finished_export.pk
    before = (list(ExportJob.objects.values()), AuditEvent.objects.count())
    with django_capture_on_commit_callbacks(execute=False) as queued:
        answers = [
            api.post(reverse("api_export_create"), {}, format="json"),
            api.post(reverse("api_export_create") + "?split=test"),
            api.get(reverse("api_export_detail", args=[pk])),
            api.get(reverse("api_export_download", args=[pk])),
            api.post(reverse("api_export_cancel", args=[pk])),
            api.get(reverse("api_sample_export")),
        ]
    assert [a.status_code for a in answers if a.status_code not in refused] == []
    assert not any(b"PK" in a.content for a in answers)
    assert (list(ExportJob.objects.values()), AuditEvent.objects.count()) == before and not queued


def test_the_inline_export_keeps_to_small_sets_and_points_larger_ones_to_the_job(
    api_for, admin_user, settings
):
    _samples()
    settings.GUARDTRACE_EXPORT_INLINE_MAX = 2
    api = api_for(admin_user)
    over = api.get(reverse("api_sample_export"))
    assert over.status_code == 409
    message = over.json()["detail"]
    assert (
        message.startswith("5 samples match: this address exports at most 2")
        and "POST /api/v1/exports" in message
    )
    assert not AuditEvent.objects.filter(action=AuditEvent.Action.EXPORT).exists()
    small = api.get(reverse("api_sample_export"), {"category": "cybersecurity"})
    assert small.status_code == 200
    files = _zip_files(b"".join(small.streaming_content))
    assert list(files) == ["samples.jsonl"] and files["samples.jsonl"].decode().count("\n") == 2
    assert AuditEvent.objects.get(action=AuditEvent.Action.EXPORT).detail == {"samples": 2}


def _age(job: ExportJob, hours: float) -> None:
    then = timezone.now() - timedelta(hours=hours)
    ExportJob.objects.filter(pk=job.pk).update(created_at=then, finished_at=then)


def test_archives_are_deleted_after_the_upload_retention(api_for, admin_user, settings):
    settings.GUARDTRACE_UPLOAD_RETENTION_HOURS = 24
    SampleFactory()
    old, recent = (exports.export_job_create(filters={}, user=admin_user) for _ in range(2))
    for job in (old, recent):
        exports.export_job_run(job_id=job.pk)
        job.refresh_from_db()
    _age(old, 25)
    old_path, recent_path = Path(old.archive.path), Path(recent.archive.path)
    # A partial file a killed worker left a day ago, and one an export is writing now.
    folder = _exports_folder(settings)
    stale_part, live_part = folder / ".stale.part", folder / ".live.part"
    for part in (stale_part, live_part):
        part.write_bytes(b"PK partial")
    then = time.time() - 25 * 3600
    os.utime(stale_part, (then, then))
    # A running export finished long ago by the clock is never touched (it is not over).
    running = ExportJob.objects.create(status=Status.RUNNING, created_by=admin_user)
    ExportJob.objects.filter(pk=running.pk).update(created_at=timezone.now() - timedelta(hours=48))

    out = io.StringIO()
    call_command("purge_uploads", stdout=out)
    assert "the archives of 1 export(s) and 1 orphan file(s)" in out.getvalue()
    old.refresh_from_db()
    assert not old.archive and old.archive_purged_at is not None and old.sample_count == 1
    assert not old_path.exists() and not stale_part.exists()
    assert recent_path.exists() and live_part.exists()
    assert ExportJob.objects.get(pk=running.pk).status == Status.RUNNING
    gone = api_for(admin_user).get(reverse("api_export_download", args=[old.pk]))
    assert gone.status_code == 409 and "deleted after the retention time" in gone.json()["detail"]
    assert services.import_uploads_purge().exports == 0  # once


def test_a_starting_worker_queues_again_the_exports_a_dead_worker_held(admin_user, settings):
    now = timezone.now()
    host = worker_id().rpartition(":")[0]

    def job(worker: str, started_ago_s: float, status: str = Status.RUNNING) -> ExportJob:
        return ExportJob.objects.create(
            status=status,
            worker=worker,
            started_at=now - timedelta(seconds=started_ago_s),
            created_by=admin_user,
        )

    dead_here = job(f"{host}:{2**22 + 12345}", 5)  # no such process
    alive_here = job(worker_id(), 5)
    busy_elsewhere = job("other-host:17", 60)
    silent_elsewhere = job("other-host:18", settings.GUARDTRACE_EXPORT_STALE_S + 60)
    waiting = job("", 0, status=Status.PENDING)
    queued = resume_all()["annotation.exports.export_jobs_resume"]
    assert sorted(queued) == sorted([dead_here.pk, silent_elsewhere.pk, waiting.pk])
    statuses = dict(ExportJob.objects.values_list("pk", "status"))
    assert statuses[alive_here.pk] == statuses[busy_elsewhere.pk] == Status.RUNNING
    assert statuses[dead_here.pk] == Status.PENDING
    SampleFactory()
    assert exports.export_job_run(job_id=dead_here.pk) is True
    assert ExportJob.objects.get(pk=dead_here.pk).status == Status.SUCCEEDED


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_runs_the_export_the_api_queued(api_for, admin_user, tmp_path, settings):
    _samples()
    api = api_for(admin_user)
    with worker("filesystem://", filesystem_broker(tmp_path), settings.MEDIA_ROOT) as process:
        job_id = api.post(reverse("api_export_create"), {"split": "test"}, format="json").json()["id"]
        wait_for(
            lambda: ExportJob.objects.get(pk=job_id).finished,
            process,
            60,
            "the export job to finish",
            lambda: ExportJob.objects.get(pk=job_id).status,
        )
    detail = api.get(reverse("api_export_detail", args=[job_id])).json()
    assert (detail["status"], detail["sample_count"]) == ("succeeded", 3), detail
    files = _zip_files(b"".join(api.get(detail["download_url"]).streaming_content))
    assert files["samples.jsonl"].decode().count("\n") == 3 and len(files) == 3  # two distinct images


def test_an_export_that_fails_says_why_and_leaves_no_file(api_for, admin_user, settings):
    samples = _samples()
    Path(samples[2].image.file.path).unlink()  # an image file lost from the media folder
    job = exports.export_job_create(filters={}, user=admin_user)
    assert exports.export_job_run(job_id=job.pk) is True
    job.refresh_from_db()
    assert job.status == Status.FAILED and job.error.startswith("internal error: FileNotFoundError")
    assert job.finished_at is not None and not job.archive
    assert not [p for p in _exports_folder(settings).rglob("*") if p.is_file()]
    detail = api_for(admin_user).get(reverse("api_export_detail", args=[job.pk])).json()
    assert (detail["status"], detail["download_url"]) == ("failed", None)


@pytest.mark.parametrize("model", [ImportJob, ExportJob])
def test_the_job_lists_cost_the_same_queries_for_one_job_or_ten(client_for, admin_user, model):
    admin_user.is_superuser = True
    admin_user.save()
    client = client_for(admin_user)
    url = reverse(f"admin:annotation_{model._meta.model_name}_changelist")
    fields = {"format": "jsonl", "original_name": "rows.jsonl"} if model is ImportJob else {}
    queries = []
    for count in (1, 10):
        model.objects.bulk_create(
            [model(created_by=admin_user, **fields) for _ in range(count - model.objects.count())]
        )
        with CaptureQueriesContext(connection) as captured:
            assert client.get(url).status_code == 200
        queries.append(len(captured))
    assert queries[0] == queries[1], queries  # each job's creator was a query of its own
