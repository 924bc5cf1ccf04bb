"""Import jobs: a file uploaded through the API or the admin form is imported by the worker, with file-wide split,
subset and source, and errors that name the file as the user uploaded it."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from annotation import services
from annotation.models import ImportJob, Sample
from tests.conftest import png_bytes
from tests.workers import filesystem_broker, wait_for, worker


def _release(*rows: dict) -> bytes:
    return json.dumps(list(rows), indent=2).encode()


def _row(n: int, image: str = "", **extra) -> dict:
    return {
        "image_name": image,
        "question": f"Question {n}?",
        "thinking": f"Thinking {n}.",
        "response": f"Answer {n}.",
        "evaluation_result": "“Analysis”: Fine.\n“Judgment”: [0]",
        **extra,
    }


def _images_zip(*names: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for n, name in enumerate(names):
            zf.writestr(f"images/{name}", png_bytes((n, 50, 90)))
    return buffer.getvalue()


def _superuser(user):
    user.is_superuser = True  # Django admin model permissions
    user.save()
    return user


@pytest.mark.django_db
def test_the_api_takes_file_wide_values_and_errors_name_the_uploaded_file(
    api_for, admin_user, django_capture_on_commit_callbacks
):
    api = api_for(admin_user)
    url = reverse("api_import_create")
    bad = api.post(
        url, {"file": SimpleUploadedFile("S-Eval_600.json", b"[]"), "split": "dev"}, format="multipart"
    )
    assert bad.status_code == 400 and bad.json() == {
        "split": ["unknown value 'dev'; expected one of train, test"]
    }
    long = api.post(
        url, {"file": SimpleUploadedFile("S-Eval_600.json", b"[]"), "subset": "s" * 65}, format="multipart"
    )
    assert long.status_code == 400 and "64-character limit" in long.json()["subset"][0]
    assert not ImportJob.objects.exists()

    good = _release(_row(1, "a.png"), _row(2, split="train"), _row(3))
    ids = []
    for data in (good, _release(_row(4), {"question": "", "thinking": "", "response": "r"})):
        # The same upload name twice: storage renames the second file, the job keeps the user's name.
        upload = {
            "file": SimpleUploadedFile("S-Eval_600.json", data),
            "split": "test",
            "subset": "S-Eval",
            "source_dataset": "GuardTrace-VL",
            "images": SimpleUploadedFile("images.zip", _images_zip("a.png")),
        }
        with django_capture_on_commit_callbacks(execute=False) as queued:
            response = api.post(url, upload, format="multipart")
        assert response.status_code == 202 and len(queued) == 1, response.content
        body = response.json()
        assert (body["original_name"], body["split"], body["subset"]) == ("S-Eval_600.json", "test", "S-Eval")
        ids.append(body["id"])
        # What the queued task does.
        assert services.import_job_run(job_id=body["id"]) is True
    first, second = (ImportJob.objects.get(pk=pk) for pk in ids)
    assert first.status == "succeeded" and first.created == 3, first.errors
    assert dict(Sample.objects.values_list("question", "split")) == {
        "Question 1?": "test",
        "Question 2?": "train",
        "Question 3?": "test",
    }
    assert set(Sample.objects.values_list("subset", "source_dataset")) == {("S-Eval", "GuardTrace-VL")}
    assert second.data_file.name != first.data_file.name
    assert second.status == "failed"
    assert second.errors == ["S-Eval_600.json:9: question: must not be empty"]
    detail = api.get(reverse("api_import_detail", args=[second.pk])).json()
    assert detail["errors"] == second.errors and detail["original_name"] == "S-Eval_600.json"


@pytest.mark.django_db
def test_the_admin_form_uploads_a_file_and_queues_a_job_the_worker_runs(
    client_for, admin_user, django_capture_on_commit_callbacks
):
    client = client_for(_superuser(admin_user))
    listing = client.get(reverse("admin:annotation_importjob_changelist")).content.decode()
    assert "Import QTA samples" in listing
    add = reverse("admin:annotation_importjob_add")
    form = client.get(add).content.decode()
    assert 'enctype="multipart/form-data"' in form and 'name="split"' in form

    data = SimpleUploadedFile("MMBench_500.json", _release(_row(1, "a.png"), _row(2, "b.png"), _row(3)))
    images = SimpleUploadedFile("images.zip", _images_zip("a.png", "b.png"))
    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = client.post(
            add,
            {
                "data_file": data,
                "images_archive": images,
                "split": "test",
                "subset": "MMBench",
                "source_dataset": "GuardTrace-VL",
            },
        )
    job = ImportJob.objects.get()
    page_url = reverse("admin:annotation_importjob_change", args=[job.pk])
    assert response.status_code == 302 and response["Location"] == page_url
    assert len(queued) == 1 and job.status == "pending" and job.created_by == admin_user
    assert (job.original_name, job.images_original_name, job.format) == (
        "MMBench_500.json",
        "images.zip",
        "guardtrace",
    )
    pending = client.get(page_url).content.decode()
    assert "MMBench_500.json is queued on the worker" in pending and 'id="job-refresh"' in pending

    assert services.import_job_run(job_id=job.pk) is True  # what the queued task calls
    page = client.get(page_url).content.decode()
    assert "Succeeded" in page and 'id="job-refresh"' not in page
    assert Sample.objects.filter(split="test", subset="MMBench").count() == 3
    assert Sample.objects.exclude(image=None).count() == 2

    # A file with errors: nothing stored, each error on the job's page under the name it was uploaded as.
    broken = SimpleUploadedFile(
        "MMBench_500.json", _release(_row(4, "gone.png"), _row(5, evaluation_result=7))
    )
    with django_capture_on_commit_callbacks(execute=False):
        client.post(add, {"data_file": broken})
    failed = ImportJob.objects.latest("id")
    services.import_job_run(job_id=failed.pk)
    page = client.get(reverse("admin:annotation_importjob_change", args=[failed.pk])).content.decode()
    assert "Failed" in page
    assert "MMBench_500.json:2: image: gone.png: the file names an image but no images folder" in page
    assert "MMBench_500.json:9: evaluation_result: judgment 7 is not one of 0, 0.5, 1" in page
    assert "imports/" not in page and Sample.objects.count() == 3


@pytest.mark.django_db
def test_the_admin_form_refuses_bad_values_by_field_and_queues_nothing(client_for, admin_user, settings):
    client = client_for(_superuser(admin_user))
    add = reverse("admin:annotation_importjob_add")
    page = client.post(
        add,
        {
            "data_file": SimpleUploadedFile("r.json", b"[]"),
            "split": "dev",
            "subset": "s" * 65,
            "images_archive": SimpleUploadedFile("i.zip", b"not a zip"),
        },
    )
    html = page.content.decode()
    assert page.status_code == 200
    assert "Select a valid choice. dev is not one of the available choices." in html
    assert "is 65 characters long, over the 64-character limit" in html and "must be a zip archive" in html
    settings.GUARDTRACE_MAX_UPLOAD_BYTES = 10
    html = client.post(add, {"data_file": SimpleUploadedFile("r.json", b"[" * 20)}).content.decode()
    assert "over the 10-byte upload limit" in html
    assert not ImportJob.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_runs_the_job_the_admin_form_queued(client_for, admin_user, tmp_path, settings):
    client = client_for(_superuser(admin_user))
    data = SimpleUploadedFile(
        "S-Eval_600.json", _release(*(_row(n, "a.png" if n == 0 else "") for n in range(5)))
    )
    images = SimpleUploadedFile("images.zip", _images_zip("a.png"))
    with worker("filesystem://", filesystem_broker(tmp_path), settings.MEDIA_ROOT) as process:
        response = client.post(
            reverse("admin:annotation_importjob_add"),
            {"data_file": data, "images_archive": images, "split": "test"},
        )
        assert response.status_code == 302
        job = ImportJob.objects.get()
        wait_for(
            lambda: ImportJob.objects.get(pk=job.pk).status in ("succeeded", "failed"),
            process,
            60,
            "the import job to finish",
            lambda: ImportJob.objects.get(pk=job.pk).status,
        )
    job.refresh_from_db()
    assert job.status == "succeeded" and job.created == 5, job.errors
    assert (
        Sample.objects.filter(split="test").count() == 5 and Sample.objects.exclude(image=None).count() == 1
    )
    assert (
        "Succeeded"
        in client.get(reverse("admin:annotation_importjob_change", args=[job.pk])).content.decode()
    )


@pytest.mark.django_db
def test_a_cancelled_import_stores_nothing_and_writes_no_image_file(
    api_for, admin_user, monkeypatch, settings, django_capture_on_commit_callbacks
):
    api = api_for(admin_user)
    upload = {
        "file": SimpleUploadedFile("S-Eval_600.json", _release(*(_row(n, f"{n}.png") for n in range(6)))),
        "images": SimpleUploadedFile("images.zip", _images_zip(*(f"{n}.png" for n in range(6)))),
    }
    with django_capture_on_commit_callbacks(execute=False):
        job_id = api.post(reverse("api_import_create"), upload, format="multipart").json()["id"]
    cancel = reverse("api_import_cancel", args=[job_id])

    # The admin presses cancel while the worker is checking the third image.
    real_inspect, seen = services.inspect_image, []

    def inspect_then_cancel(data, **limits):
        seen.append(1)
        if len(seen) == 3:
            assert api.post(cancel).json()["status"] == "cancelled"
        return real_inspect(data, **limits)

    monkeypatch.setattr(services, "inspect_image", inspect_then_cancel)
    assert services.import_job_run(job_id=job_id) is True
    job = ImportJob.objects.get(pk=job_id)
    assert job.status == "cancelled" and job.total == 6 and job.finished_at is not None
    assert not Sample.objects.exists()
    assert not list(Path(settings.MEDIA_ROOT).rglob("*.png"))
    # Over: a second cancel says why, by field; the queued message, delivered late, does nothing.
    again = api.post(cancel)
    assert again.status_code == 409 and again.json() == {
        "status": [f"import #{job_id} was cancelled: nothing to cancel"]
    }
    assert services.import_job_run(job_id=job_id) is False and not Sample.objects.exists()
    assert api.post(reverse("api_import_cancel", args=[job_id + 1000])).status_code == 404


@pytest.mark.django_db
def test_a_queued_import_cancelled_from_its_admin_page_never_runs(
    client_for, admin_user, django_capture_on_commit_callbacks
):
    client = client_for(_superuser(admin_user))
    with django_capture_on_commit_callbacks(execute=False):
        client.post(
            reverse("admin:annotation_importjob_add"),
            {"data_file": SimpleUploadedFile("MMBench_500.json", _release(_row(1), _row(2)))},
        )
    job = ImportJob.objects.get()
    page = client.get(reverse("admin:annotation_importjob_change", args=[job.pk])).content.decode()
    assert "Cancel this import" in page
    response = client.post(
        reverse("admin:annotation_importjob_changelist"), {"action": "cancel", "_selected_action": [job.pk]}
    )
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.status == "cancelled"
    page = client.get(reverse("admin:annotation_importjob_change", args=[job.pk])).content.decode()
    assert "Cancel this import" not in page and 'id="job-refresh"' not in page
    assert services.import_job_run(job_id=job.pk) is False and not Sample.objects.exists()
    # Queued again from the list: it runs from the start, once.
    with django_capture_on_commit_callbacks(execute=False) as queued:
        client.post(
            reverse("admin:annotation_importjob_changelist"),
            {"action": "queue_again", "_selected_action": [job.pk]},
        )
    assert len(queued) == 1 and ImportJob.objects.get(pk=job.pk).status == "pending"
    assert services.import_job_run(job_id=job.pk) is True and Sample.objects.count() == 2


@pytest.mark.django_db
def test_a_running_import_reports_its_progress(api_for, admin_user, django_capture_on_commit_callbacks):
    api = api_for(admin_user)
    with django_capture_on_commit_callbacks(execute=False):
        body = api.post(
            reverse("api_import_create"),
            {"file": SimpleUploadedFile("S-Eval_600.json", _release(*(_row(n) for n in range(5))))},
            format="multipart",
        ).json()
    assert (body["status"], body["total"], body["done"]) == ("pending", 0, 0)
    assert services.import_job_run(job_id=body["id"]) is True
    detail = api.get(reverse("api_import_detail", args=[body["id"]])).json()
    assert (detail["status"], detail["total"], detail["done"], detail["created"]) == ("succeeded", 5, 5, 5)
    assert detail["started_at"] <= detail["heartbeat_at"] <= detail["finished_at"]


@pytest.mark.django_db
def test_a_cancelled_import_resumes_from_the_start_and_stores_its_rows_once(
    api_for, admin_user, django_capture_on_commit_callbacks
):
    api = api_for(admin_user)
    with django_capture_on_commit_callbacks(execute=False):
        job_id = api.post(
            reverse("api_import_create"),
            {"file": SimpleUploadedFile("S-Eval_600.json", _release(_row(1), _row(2)))},
            format="multipart",
        ).json()["id"]
    resume = reverse("api_import_resume", args=[job_id])
    queued = api.post(resume)  # queued, not stopped: nothing to resume
    assert queued.status_code == 409 and queued.json() == {
        "status": [f"import #{job_id} is queued: nothing to resume"]
    }
    assert api.post(reverse("api_import_cancel", args=[job_id])).json()["status"] == "cancelled"
    with django_capture_on_commit_callbacks(execute=False) as again:
        response = api.post(resume)
    assert response.status_code == 202 and response.json()["status"] == "pending" and len(again) == 1
    assert services.import_job_run(job_id=job_id) is True
    assert services.import_job_run(job_id=job_id) is False  # a second delivery of the message
    job = ImportJob.objects.get(pk=job_id)
    assert (job.status, job.created, job.done, job.total) == (
        "succeeded",
        2,
        2,
        2,
    ) and Sample.objects.count() == 2
    assert api.post(resume).status_code == 409  # succeeded
