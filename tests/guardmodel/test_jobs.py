"""Guard jobs: a tiny checkpoint registered, judging samples through a real Celery worker, idempotently."""

from __future__ import annotations

import time

import pytest
from django.urls import reverse

from annotation import services as annotation_services
from annotation.models import Label, Sample
from guardmodel import services
from guardmodel.models import Evaluation, GuardCheckpoint, GuardJob
from qta.images import DirectoryImageSource
from qta.loading import CheckpointError
from qta.synthetic import generate
from tests.workers import filesystem_broker, kill_worker, worker


def _import_synthetic(tmp_path, count: int) -> list[int]:
    generate(tmp_path / "syn", count=count, seed=5, test_fraction=0.5)
    annotation_services.samples_import(
        data=(tmp_path / "syn" / "samples.jsonl").read_bytes(), name="samples.jsonl", fmt="jsonl",
        images=DirectoryImageSource(tmp_path / "syn"),
    )  # fmt: skip
    return list(Sample.objects.values_list("pk", flat=True))


def _wait(job_id: int, process, timeout: float = 120) -> GuardJob:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = GuardJob.objects.get(pk=job_id)
        if job.finished:
            return job
        assert process.poll() is None, process.stdout.read()
        time.sleep(0.3)
    raise AssertionError(f"guard job {job_id} still {job.status} after {timeout}s")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_on_the_gpu_queue_judges_samples_into_guard_labels(tiny_dir, tmp_path, settings, admin_user):
    ids = _import_synthetic(tmp_path, 24)
    checkpoint = services.checkpoint_register(name="tiny", path=str(tiny_dir), activate=True)
    subsets = services.test_subsets()
    with worker("filesystem://", filesystem_broker(tmp_path), settings.MEDIA_ROOT, queues="gpu") as process:
        job = services.guard_job_create(checkpoint=checkpoint, sample_ids=ids, user=admin_user,
                                        evaluate_subsets=subsets)  # fmt: skip
        job = _wait(job.pk, process)
    assert job.status == "succeeded", job.error
    assert (job.total, job.done, job.skipped, job.failed) == (24, 24, 0, 0)
    labels = Label.objects.filter(source_kind="guard", source_name="tiny", prompt_version="qta-v1")
    assert labels.count() == 24 and set(labels.values_list("sample_id", flat=True)) == set(ids)
    # An untrained tiny model does not follow the format: every label says so, with the raw output kept.
    assert job.invalid == labels.filter(status="invalid").count() == 24
    assert all(label.raw_output and label.error and label.judgment is None for label in labels)
    assert all(label.meta["completion_tokens"] > 0 for label in labels)
    evaluation = Evaluation.objects.get(source_kind="guard", source_name="tiny")
    assert evaluation.subsets == subsets and evaluation.metrics["invalid"] > 0


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_job_is_taken_over_by_the_next_and_no_label_is_lost_or_doubled(
    tiny_dir, tmp_path, settings, admin_user
):
    ids = _import_synthetic(tmp_path, 256)
    checkpoint = services.checkpoint_register(name="tiny", path=str(tiny_dir))
    broker = ("filesystem://", filesystem_broker(tmp_path), settings.MEDIA_ROOT)
    labels = Label.objects.filter(source_kind="guard", source_name="tiny")
    with worker(*broker, queues="gpu") as first:
        job = services.guard_job_create(checkpoint=checkpoint, sample_ids=ids, user=admin_user)
        deadline = time.monotonic() + 120
        while not labels.exists():  # killed after its first chunk is committed
            assert time.monotonic() < deadline and first.poll() is None, "the job never committed a chunk"
            time.sleep(0.05)
        kill_worker(first)
    stuck = GuardJob.objects.get(pk=job.pk)
    assert stuck.status == "running" and 0 < labels.count() < 256
    with worker(*broker, queues="gpu") as second:
        done = _wait(job.pk, second, timeout=240)
    assert done.status == "succeeded", done.error
    assert labels.count() == 256 and len(set(labels.values_list("sample_id", flat=True))) == 256
    assert done.done + done.skipped >= 256


@pytest.mark.django_db
def test_rerunning_skips_what_is_judged_and_a_duplicate_message_does_nothing(tiny_dir, tmp_path):
    ids = _import_synthetic(tmp_path, 8)
    checkpoint = services.checkpoint_register(name="tiny", path=str(tiny_dir))
    first = GuardJob.objects.create(
        checkpoint=checkpoint, prompt_version="qta-v1", sample_ids=ids[:5], total=5
    )
    assert services.guard_job_run(job_id=first.pk) is True
    assert services.guard_job_run(job_id=first.pk) is False  # the same message delivered twice
    second = GuardJob.objects.create(checkpoint=checkpoint, prompt_version="qta-v1", sample_ids=ids, total=8)
    services.guard_job_run(job_id=second.pk)
    second.refresh_from_db()
    assert (second.status, second.skipped, second.done) == ("succeeded", 5, 3)
    assert Label.objects.filter(source_kind="guard").count() == 8


@pytest.mark.django_db
def test_a_redelivered_message_takes_over_a_job_whose_worker_died(tiny_dir, tmp_path):
    ids = _import_synthetic(tmp_path, 4)
    checkpoint = services.checkpoint_register(name="tiny", path=str(tiny_dir))
    job = GuardJob.objects.create(checkpoint=checkpoint, prompt_version="qta-v1", sample_ids=ids, total=4,
                                  status=GuardJob.Status.RUNNING)  # fmt: skip
    assert services.guard_job_run(job_id=job.pk) is False
    assert services.guard_job_run(job_id=job.pk, redelivered=True) is True
    job.refresh_from_db()
    assert job.status == "succeeded" and job.done == 4


@pytest.mark.django_db
def test_a_checkpoint_that_vanished_fails_the_job_with_its_reason_and_resume_requeues(tiny_dir, tmp_path,
                                                                                       django_capture_on_commit_callbacks):  # fmt: skip
    ids = _import_synthetic(tmp_path, 2)
    checkpoint = GuardCheckpoint.objects.create(name="gone", path=str(tmp_path / "deleted"))
    job = GuardJob.objects.create(checkpoint=checkpoint, prompt_version="qta-v1", sample_ids=ids, total=2)
    services.guard_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == "failed" and "checkpoint directory does not exist" in job.error
    with django_capture_on_commit_callbacks() as callbacks:
        assert services.guard_job_resume(job) is True
    assert len(callbacks) == 1
    job.refresh_from_db()
    assert job.status == "pending" and job.error == ""


@pytest.mark.django_db
def test_a_cancelled_job_stops_before_its_next_chunk(tiny_dir, tmp_path):
    ids = _import_synthetic(tmp_path, 4)
    checkpoint = services.checkpoint_register(name="tiny", path=str(tiny_dir))
    job = GuardJob.objects.create(checkpoint=checkpoint, prompt_version="qta-v1", sample_ids=ids, total=4)
    assert services.guard_job_cancel(job) is True
    assert services.guard_job_run(job_id=job.pk) is False
    assert not Label.objects.filter(source_kind="guard").exists()


@pytest.mark.django_db
def test_registering_checks_the_directory_and_one_checkpoint_is_active(tiny_dir, tmp_path):
    with pytest.raises(CheckpointError, match="missing config.json"):
        services.checkpoint_register(name="empty", path=str(tmp_path))
    first = services.checkpoint_register(name="first", path=str(tiny_dir), activate=True)
    second = services.checkpoint_register(name="second", endpoint="http://127.0.0.1:9/v1", activate=True)
    first.refresh_from_db()
    assert not first.is_active and second.is_active
    assert GuardCheckpoint.objects.filter(is_active=True).count() == 1


@pytest.mark.django_db
def test_the_admin_action_judges_selected_samples_with_a_chosen_checkpoint(
    tiny_dir, tmp_path, client_for, admin_user, django_capture_on_commit_callbacks
):
    ids = _import_synthetic(tmp_path, 6)
    checkpoint = services.checkpoint_register(name="tiny", path=str(tiny_dir))
    admin_user.is_superuser = True  # Django admin model permissions
    admin_user.save()
    client = client_for(admin_user)
    url = reverse("admin:annotation_sample_changelist")
    form = {"action": "judge_samples_action", "_selected_action": ids[:3]}
    page = client.post(url, form)
    assert page.status_code == 200 and b"Judge selected samples with a guard checkpoint" in page.content
    with django_capture_on_commit_callbacks() as callbacks:
        done = client.post(url, {**form, "apply": "1", "checkpoint": checkpoint.pk})
    job = GuardJob.objects.get()
    assert done.status_code == 302 and done["Location"] == reverse("guard_job", args=[job.pk])
    assert job.sample_ids == sorted(ids[:3]) and job.created_by == admin_user and len(callbacks) == 1
    # The worker would run it; run it here and watch the progress page.
    services.guard_job_run(job_id=job.pk)
    progress = client.get(reverse("guard_job", args=[job.pk]), headers={"HX-Request": "true"})
    html = progress.content.decode()
    assert "Succeeded" in html and 'value="100"' in html and "hx-trigger" not in html and "<html" not in html
    assert "guard/jobs" in client.get(reverse("admin:guardmodel_guardjob_changelist")).content.decode()


@pytest.mark.django_db
def test_the_demo_builds_and_activates_a_tiny_guard_once(settings, tmp_path):
    from django.core.management import call_command

    settings.VAR_DIR = tmp_path
    call_command("demo_guard")
    call_command("demo_guard")
    checkpoint = GuardCheckpoint.objects.get()
    assert checkpoint.name == "tiny-guard" and checkpoint.is_active
    assert (tmp_path / "models" / "tiny-guard" / "model.safetensors").is_file()


@pytest.mark.django_db
def test_build_tiny_guard_registers_and_refuses_a_non_empty_directory(tmp_path):
    from django.core.management import CommandError, call_command

    call_command("build_tiny_guard", str(tmp_path / "g"), "--register", "g1", "--activate")
    assert GuardCheckpoint.objects.get(name="g1").is_active
    with pytest.raises(CommandError, match="not empty"):
        call_command("build_tiny_guard", str(tmp_path / "g"))


@pytest.mark.django_db
def test_judge_samples_sync_judges_the_test_subsets_and_evaluates(tiny_dir, tmp_path, capsys):
    from django.core.management import call_command

    _import_synthetic(tmp_path, 24)
    services.checkpoint_register(name="tiny", path=str(tiny_dir), activate=True)
    test_ids = set(Sample.objects.filter(split="test").values_list("pk", flat=True))
    call_command("judge_samples", "--sync", "--evaluate")
    job = GuardJob.objects.get()
    assert job.status == "succeeded" and set(job.sample_ids) == test_ids and job.done == len(test_ids)
    out = capsys.readouterr().out
    assert "Succeeded" in out
    evaluation = Evaluation.objects.get()
    assert evaluation.subsets == services.test_subsets() and job.evaluation == evaluation
    # An evaluation recorded later by anyone else is not this job's.
    services.evaluation_run(source_kind="guard", source_name="tiny", prompt_version=job.prompt_version)
    job.refresh_from_db()
    assert job.evaluation == evaluation


@pytest.mark.django_db
def test_the_guard_job_page_links_to_the_evaluation_it_recorded(tiny_dir, tmp_path, client_for, admin_user):
    _import_synthetic(tmp_path, 24)
    checkpoint = services.checkpoint_register(name="tiny", path=str(tiny_dir), activate=True)
    job = services.guard_job_create(
        checkpoint=checkpoint, sample_ids=list(Sample.objects.values_list("pk", flat=True)),
        evaluate_subsets=services.test_subsets(), enqueue=False,
    )  # fmt: skip
    services.guard_job_run(job_id=job.pk)
    job.refresh_from_db()
    page = client_for(admin_user).get(reverse("guard_job", args=[job.pk])).content.decode()
    assert reverse("evaluation_detail", args=[job.evaluation_id]) in page


@pytest.mark.django_db
def test_a_starting_worker_queues_again_only_jobs_whose_worker_died_here_and_pending_ones(tiny_dir):
    from qta.workers import worker_id

    checkpoint = services.checkpoint_register(name="tiny", path=str(tiny_dir))
    host = worker_id().rpartition(":")[0]

    def job(status: str, holder: str) -> GuardJob:
        return GuardJob.objects.create(
            checkpoint=checkpoint, prompt_version="qta-v1", status=status, worker=holder
        )

    dead_here = job("running", f"{host}:{2**22 + 4321}")
    alive_here = job("running", worker_id())
    elsewhere = job("running", "other-host:7")  # taken over when its message is redelivered
    waiting = job("pending", "")
    cancelled = job("cancelled", f"{host}:{2**22 + 4322}")
    assert sorted(services.guard_jobs_resume()) == sorted([dead_here.pk, waiting.pk])
    statuses = dict(GuardJob.objects.values_list("pk", "status"))
    assert [statuses[j.pk] for j in (alive_here, elsewhere, cancelled)] == ["running", "running", "cancelled"]
