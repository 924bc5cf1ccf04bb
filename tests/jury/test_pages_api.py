"""Starting runs from the API and the admin, the run page, and who may do what."""

from __future__ import annotations

import pytest
from django.urls import reverse

from annotation.models import Label
from jury import services
from jury.models import Juror, JuryRun, JuryTask
from qta.workers import worker_id


def test_an_admin_starts_a_run_over_the_api_and_polls_its_progress(
    api_for, admin_user, reviewer_user, jury_server, make_jurors, voted, django_capture_on_commit_callbacks
):
    jurors = make_jurors(jury_server.url)
    samples = voted("1,1,1", "0,0,0", "1,0,1")
    samples[2].split = "test"
    samples[2].save()
    with django_capture_on_commit_callbacks() as queued:
        response = api_for(admin_user).post(
            reverse("api_jury_run_create"), {"split": "train", "jurors": ["a", "b"]}, format="json"
        )
    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["samples"], body["tasks"], body["selection"]) == (2, 4, {"split": "train"})
    assert [j["pending"] for j in body["jurors"]] == [2, 2]
    assert len(queued) == 1  # the drivers are queued once the run is committed
    for juror in jurors[:2]:
        services.juror_drive(juror.pk)
    progress = api_for(reviewer_user).get(reverse("api_jury_run", args=[body["id"]])).json()
    assert progress["status"] == "succeeded"
    assert [(j["name"], j["valid"], j["pending"], j["eta_seconds"]) for j in progress["jurors"]] == [
        ("a", 2, 0, 0.0), ("b", 2, 0, 0.0),
    ]  # fmt: skip


def test_the_run_reports_which_worker_drove_which_juror(api_for, client_for, reviewer_user, jury_server,
                                                      make_jurors, voted):  # fmt: skip
    jurors = make_jurors(jury_server.url)
    voted("1,1,1", "0,0,0", "1,0,1")
    run = services.jury_run_create(selection={}, enqueue=False)
    assert services.run_workers(run) == []  # nothing written yet
    services.juror_drive(jurors[0].pk, worker="jury@host-1")
    services.juror_drive(jurors[1].pk, worker="jury@host-1")
    services.juror_drive(jurors[2].pk, worker="jury@host-2")
    body = api_for(reviewer_user).get(reverse("api_jury_run", args=[run.pk])).json()
    assert [(w["worker"], w["labels"], w["jurors"]) for w in body["workers"]] == [
        ("jury@host-1", 6, ["a", "b"]), ("jury@host-2", 3, ["c"]),
    ]  # fmt: skip
    assert all(w["first_at"] <= w["last_at"] for w in body["workers"])
    page = client_for(reviewer_user).get(reverse("jury_run", args=[run.pk])).content.decode()
    assert "<h2>Workers</h2>" in page and "<code>jury@host-2</code>" in page and "a, b" in page
    # A driver run outside a Celery worker is named by host and pid.
    (extra,) = make_jurors(jury_server.url, names=("d",))
    other = services.jury_run_create(selection={}, jurors=[extra], enqueue=False)
    services.juror_drive(extra.pk)
    assert [(w.worker, w.labels) for w in services.run_workers(other)] == [(worker_id(), 3)]


@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        ({"split": "dev"}, "split", '"dev" is not a valid choice.'),
        ({"subset": "nowhere"}, "selection", "no samples match"),
        ({"jurors": ["a", "zz"], "all": True}, "jurors", "no juror named zz"),
        ({"sample_ids": ["x"]}, "sample_ids", "A valid integer is required."),
    ],
)
def test_bad_run_requests_name_the_field(api_for, admin_user, jury_server, make_jurors, voted, payload, field,
                                         message):  # fmt: skip
    make_jurors(jury_server.url)
    voted("1,1,1")
    response = api_for(admin_user).post(reverse("api_jury_run_create"), payload, format="json")
    assert response.status_code == 400
    errors = response.json()[field]
    assert message in (errors if isinstance(errors, list) and isinstance(errors[0], str) else str(errors))
    assert JuryRun.objects.count() == 0


def test_only_admins_start_runs_and_only_roles_see_them(api_for, client_for, expert_user, outsider, jury_server,
                                                       make_jurors, voted):  # fmt: skip
    make_jurors(jury_server.url)
    voted("1,1,1")
    assert api_for(None).post(reverse("api_jury_run_create"), {}, format="json").status_code == 401
    assert api_for(expert_user).post(reverse("api_jury_run_create"), {}, format="json").status_code == 403
    run = services.jury_run_create(selection={}, enqueue=False)
    assert api_for(outsider).get(reverse("api_jury_run", args=[run.pk])).status_code == 403
    assert client_for(outsider).get(reverse("jury_run", args=[run.pk])).status_code == 403
    page = client_for(expert_user).post(reverse("jury_run_cancel", args=[run.pk]))
    assert page.status_code == 403 and JuryRun.objects.get().status == "running"


def test_the_run_page_polls_while_running_and_an_admin_cancels_and_resumes(
    client_for, admin_user, jury_server, make_jurors, voted, django_capture_on_commit_callbacks
):
    jurors = make_jurors(jury_server.url)
    voted("1,1,1", "0,0,0")
    run = services.jury_run_create(selection={}, enqueue=False)
    client = client_for(admin_user)
    page = client.get(reverse("jury_run", args=[run.pk])).content.decode()
    assert 'hx-trigger="every 2s"' in page and "Running" in page and page.count("<progress") == 4
    assert client.post(reverse("jury_run_cancel", args=[run.pk])).status_code == 302
    assert JuryRun.objects.get().status == "cancelled"
    with django_capture_on_commit_callbacks(execute=False) as queued:
        client.post(reverse("jury_run_resume", args=[run.pk]))
    assert JuryRun.objects.get().status == "running" and len(queued) == 1
    for juror in jurors:
        services.juror_drive(juror.pk)
    partial = client.get(reverse("jury_run", args=[run.pk]), HTTP_HX_REQUEST="true").content.decode()
    assert "hx-trigger" not in partial and "Succeeded" in partial and "6 / 6 labels" in partial
    assert "<html" not in partial
    listing = client.get(reverse("jury_run_list")).content.decode()
    assert f"#{run.pk}" in listing and "a, b, c" in listing
    assert client.post(f"/jury/runs/{run.pk}/explode/").status_code == 404


def test_the_admin_runs_the_jury_on_chosen_samples_and_from_the_run_form(
    client_for, admin_user, jury_server, make_jurors, voted
):
    make_jurors(jury_server.url)
    samples = voted("1,1,1", "0,0,0", "1,0,1")
    admin_user.is_superuser = True  # Django admin model permissions
    admin_user.save()
    client = client_for(admin_user)
    response = client.post(
        reverse("admin:annotation_sample_changelist"),
        {"action": "run_jury_action", "_selected_action": [samples[0].pk, samples[1].pk]},
    )
    run = JuryRun.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("jury_run", args=[run.pk])
    assert set(JuryTask.objects.values_list("sample_id", flat=True)) == {samples[0].pk, samples[1].pk}

    form = client.get(reverse("admin:jury_juryrun_add")).content.decode()
    assert "Start a jury run" in form and 'name="unlabelled"' in form
    chosen = {"unlabelled": "on", "split": "train"}
    preview = client.post(reverse("admin:jury_juryrun_add"), {**chosen, "_preview": "Preview"})
    launch = {**chosen, "previewed": preview.context["fingerprint"], "_launch": "Launch"}
    response = client.post(reverse("admin:jury_juryrun_add"), launch)
    second = JuryRun.objects.exclude(pk=run.pk).get()
    assert response.status_code == 302 and second.selection == {"split": "train", "unlabelled": True}
    # The first run's samples are waiting in it: only the third sample is new work.
    assert second.total == 3 and second.skipped == 6
    response = client.post(reverse("admin:jury_juryrun_add"), {"stratum": "d1_1_1", "_preview": "Preview"})
    assert "selection: no samples match" in response.content.decode()


def test_the_juror_form_says_what_a_backend_needs(client_for, admin_user, tmp_path):
    admin_user.is_superuser = True
    admin_user.save()
    client = client_for(admin_user)
    base = {"name": "j", "model_name": "m", "prompt_version": "qta-v1", "max_concurrency": 8, "timeout_s": 60,
            "max_tokens": 256, "enabled": "on"}  # fmt: skip
    page = client.post(reverse("admin:jury_juror_add"), {**base, "backend": "openai"}).content.decode()
    assert "needs the server&#x27;s base URL" in page
    page = client.post(
        reverse("admin:jury_juror_add"), {**base, "backend": "transformers", "model_name": str(tmp_path)}
    ).content.decode()
    assert "config.json" in page
    page = client.post(
        reverse("admin:jury_juror_add"), {**base, "backend": "openai", "base_url": "http://v:8000/v1",
                                          "prompt_version": "qta-v9"},
    ).content.decode()  # fmt: skip
    assert "Select a valid choice. qta-v9 is not one of the available choices." in page
    page = client.post(
        reverse("admin:jury_juror_add"), {**base, "backend": "openai", "base_url": "vllm:8000/v1"}
    )
    assert "expected an http:// or https:// URL with a host" in page.content.decode().replace("&#x27;", "'")
    assert not Juror.objects.exists()
    saved = client.post(
        reverse("admin:jury_juror_add"), {**base, "backend": "openai", "base_url": "http://v:8000/v1"}
    )
    assert saved.status_code == 302, saved.context["adminform"].form.errors
    assert Juror.objects.get().base_url == "http://v:8000/v1"


@pytest.mark.slow
def test_a_local_transformers_juror_judges_on_a_tiny_checkpoint(tiny_dir, voted):
    juror = Juror.objects.create(name="local", backend="transformers", model_name=str(tiny_dir), max_concurrency=4,
                                 max_tokens=16)  # fmt: skip
    samples = voted("1,1,1", "0,0,0", "1,0,1")
    services.jury_run_create(selection={}, enqueue=False)
    assert services.juror_drive(juror.pk).written == 3
    labels = Label.objects.filter(source_name="local")
    assert sorted(labels.values_list("sample_id", flat=True)) == [s.pk for s in samples]
    # An untrained tiny model does not follow the format: asked twice, then kept as invalid with both outputs.
    for label in labels:
        assert label.status == "invalid" and label.raw_output and label.meta["first_output"]
        assert [a["outcome"] for a in label.meta["attempt_log"]] == ["invalid output", "invalid"]
        assert label.meta["completion_tokens"] > 0
