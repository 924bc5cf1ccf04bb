"""The three-users pattern: roles see samples; a logged-in user without a role and anonymous users never do."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.core.files.base import ContentFile
from django.test import Client
from django.urls import reverse

from annotation.models import AuditEvent, ImportJob
from tests.annotation.factories import ImageAssetFactory, LabelFactory, SampleFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def sample():
    sample = SampleFactory(image=ImageAssetFactory(), question="A harmful question")
    LabelFactory(sample=sample)
    return sample


def _pages(sample):
    return [
        reverse("dashboard"),
        reverse("sample_list"),
        reverse("sample_detail", args=[sample.pk]),
        reverse("sample_image", args=[sample.pk]),
        reverse("image", args=[sample.image.sha256]),
    ]


def _api(sample):
    return [
        reverse("api_sample_list"),
        reverse("api_sample_detail", args=[sample.pk]),
        reverse("api_label_list"),
        reverse("api_strata"),
        reverse("api_sample_export"),
        reverse("api_schema"),
    ]


def test_anonymous_users_are_sent_to_login_on_every_page(client, sample):
    for url in _pages(sample):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("login")), url


def test_a_user_without_a_role_is_refused_on_every_page(client_for, outsider, sample):
    client = client_for(outsider)
    for url in _pages(sample):
        response = client.get(url)
        assert response.status_code == 403, url
        assert b"A harmful question" not in response.content
    assert not AuditEvent.objects.filter(action=AuditEvent.Action.IMAGE_VIEW).exists()


def test_anonymous_and_role_less_api_calls_are_refused(api_for, outsider, sample):
    for url in _api(sample):
        assert api_for(None).get(url).status_code == 401, url
        if url != reverse("api_schema"):
            assert api_for(outsider).get(url).status_code == 403, url
    for url in (reverse("api_sample_bulk_create"), reverse("api_label_list"), reverse("api_import_create")):
        assert api_for(None).post(url, {}).status_code == 401, url
        assert api_for(outsider).post(url, {}).status_code == 403, url


@pytest.mark.parametrize("role_user", ["admin_user", "expert_user", "reviewer_user"])
def test_each_role_sees_samples(request, client_for, api_for, sample, role_user):
    user = request.getfixturevalue(role_user)
    client = client_for(user)
    for url in _pages(sample):
        # The reveal panel answers htmx with the fragment (a plain request is redirected to the page).
        headers = {"HTTP_HX_REQUEST": "true"} if url == reverse("sample_image", args=[sample.pk]) else {}
        assert client.get(url, **headers).status_code == 200, url
    assert api_for(user).get(reverse("api_sample_detail", args=[sample.pk])).status_code == 200


def test_only_admins_import_and_export(api_for, expert_user, reviewer_user, sample):
    for user in (expert_user, reviewer_user):
        assert api_for(user).get(reverse("api_sample_export")).status_code == 403
        assert api_for(user).post(reverse("api_sample_bulk_create"), {}, format="json").status_code == 403


def test_image_views_are_audited_with_who_and_which_sample(client_for, reviewer_user, sample):
    response = client_for(reviewer_user).get(
        reverse("image", args=[sample.image.sha256]) + f"?sample={sample.pk}"
    )
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert "no-store" in response["Cache-Control"]
    event = AuditEvent.objects.get(action=AuditEvent.Action.IMAGE_VIEW)
    assert (event.user, event.sample, event.image) == (reviewer_user, sample, sample.image)


def test_media_files_have_no_public_url(client, client_for, admin_user, sample):
    path = "/media/" + sample.image.file.name
    assert client.get(path).status_code == 404
    assert client_for(admin_user).get(path).status_code == 404


def _import_pages(job) -> list[str]:
    return [
        reverse("admin:annotation_importjob_changelist"),
        reverse("admin:annotation_importjob_add"),
        reverse("admin:annotation_importjob_change", args=[job.pk]),
        reverse("admin:training_datasetsnapshot_add"),
    ]


def test_only_admins_reach_the_import_forms_and_jobs(
    client, client_for, api_for, admin_user, expert_user, reviewer_user, outsider
):
    job = ImportJob.objects.create(
        data_file=ContentFile(b"[]", name="r.json"), original_name="S-Eval_600.json", format="guardtrace"
    )
    for url in _import_pages(job):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/"), url
    # Roles other than admin (and no role) are not staff: the admin sends them to its login.
    for user in (expert_user, reviewer_user, outsider):
        client.logout()
        for url in _import_pages(job):
            response = client_for(user).get(url)
            assert response.status_code == 302 and response["Location"].startswith("/admin/login/"), url
    # Staff with every model permission, but without the admin role, may look at jobs and never import.
    staff = User.objects.create_user(username="sam", is_staff=True)
    staff.user_permissions.set(
        Permission.objects.filter(content_type__app_label__in=["annotation", "training"])
    )
    client.logout()
    staff_client = client_for(staff)
    assert staff_client.get(reverse("admin:annotation_importjob_changelist")).status_code == 200
    for url in (reverse("admin:annotation_importjob_add"), reverse("admin:training_datasetsnapshot_add")):
        assert staff_client.get(url).status_code == 403, url
        assert staff_client.post(url, {}).status_code == 403, url
    assert "Import QTA samples" not in staff_client.get(_import_pages(job)[0]).content.decode()
    client.logout()
    admin_user.is_superuser = True
    admin_user.save()
    for url in _import_pages(job):
        assert client_for(admin_user).get(url).status_code == 200, url
    detail = reverse("api_import_detail", args=[job.pk])
    assert api_for(None).get(detail).status_code == 401
    cancel = reverse("api_import_cancel", args=[job.pk])
    assert api_for(None).post(cancel).status_code == 401
    assert api_for(None).post(reverse("api_import_resume", args=[job.pk])).status_code == 401
    for user in (expert_user, reviewer_user, outsider):
        assert api_for(user).get(detail).status_code == 403
        assert api_for(user).post(reverse("api_import_create"), {}).status_code == 403
        assert api_for(user).post(cancel).status_code == 403
        assert api_for(user).post(reverse("api_import_resume", args=[job.pk])).status_code == 403
    # Staff without the admin role are not offered the cancel action, and posting it changes nothing.
    changelist = reverse("admin:annotation_importjob_changelist")
    staff_client = client_for(staff)
    assert "Cancel the selected imports" not in staff_client.get(changelist).content.decode()
    staff_client.post(changelist, {"action": "cancel", "_selected_action": [job.pk]})
    assert ImportJob.objects.get(pk=job.pk).status == "pending"
    assert api_for(admin_user).get(detail).json()["original_name"] == "S-Eval_600.json"


def test_only_admins_launch_rounds_and_manage_prompt_templates(client, client_for, admin_user, expert_user):
    from guardmodel.prompts import prompt_template_create

    template = prompt_template_create(name="mine", system_prompt="Judge it. “Judgment”: [0/0.5/1]")
    pages = [
        reverse("admin:training_trainingrun_add"),
        reverse("admin:training_trainingrun_add") + "?stage=dpo&parent=abc",
        reverse("admin:guardmodel_prompttemplate_add"),
        reverse("admin:guardmodel_prompttemplate_delete", args=[template.pk]),
    ]
    for url in pages:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/"), url
        response = client_for(expert_user).get(url)  # not staff
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/"), url
        client.logout()
    # Staff holding every model permission, but not the admin role: refused, and nothing launched or deleted.
    staff = User.objects.create_user(username="sam", is_staff=True)
    staff.user_permissions.set(
        Permission.objects.filter(content_type__app_label__in=["training", "guardmodel"])
    )
    staff_client = client_for(staff)
    for url in pages:
        assert staff_client.get(url).status_code == 403, url
        assert staff_client.post(url, {"post": "yes"}).status_code == 403, url
    client.logout()
    admin_user.is_superuser = True
    admin_user.save()
    admin_client = client_for(admin_user)
    for url in pages:
        assert admin_client.get(url).status_code == 200, url
    assert admin_client.post(pages[3], {"post": "yes"}).status_code == 302
    assert not type(template).objects.exists()


def test_the_unversioned_api_paths_redirect_without_content_and_keep_method_and_query(
    api_for, outsider, sample
):
    """The old /api/samples/… paths answer 308 to /api/v1/ for anyone (they show nothing); the new home then
    applies the roles. Anything else under /api/ is a 404."""
    for client in (api_for(None), api_for(outsider)):
        moved = client.get("/api/samples/?subset=MM-Eval")
        assert moved.status_code == 308 and moved["Location"] == "/api/v1/samples?subset=MM-Eval"
        assert b"A harmful question" not in moved.content
        posted = client.post("/api/labels/", {})
        assert posted.status_code == 308 and posted["Location"] == "/api/v1/labels"
        detail = client.get(f"/api/samples/{sample.pk}/")
        assert detail["Location"] == reverse("api_sample_detail", args=[sample.pk])
        assert client.get("/api/nothing-here/").status_code == 404
    assert api_for(outsider).get(reverse("api_sample_list"), {"subset": "MM-Eval"}).status_code == 403
    # As a browser session does it, with CSRF checked: the redirect itself changes nothing, so it never asks for a
    # CSRF token (the target does, for sessions).
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(outsider)
    posted = browser.post("/api/imports/6/cancel", {})
    assert posted.status_code == 308 and posted["Location"] == "/api/v1/imports/6/cancel"


def test_only_admins_cancel_and_resume_generation_runs(
    client, client_for, admin_user, expert_user, reviewer_user, outsider
):
    from django.contrib.auth.models import Group

    from generation.models import GenerationRun

    auditor = User.objects.create_user(username="audrey")
    auditor.groups.add(Group.objects.get_or_create(name="auditor")[0])
    running = GenerationRun.objects.create(status="running")
    cancelled = GenerationRun.objects.create(status="cancelled")
    actions = [
        (reverse("generation_run_cancel", args=[running.pk]), running),
        (reverse("generation_run_resume", args=[cancelled.pk]), cancelled),
    ]
    for url, run in actions:
        response = client.post(url)
        assert response.status_code == 302 and response["Location"].startswith(reverse("login")), url
        for user in (outsider, expert_user, reviewer_user, auditor):
            assert client_for(user).post(url).status_code == 403, (url, user.username)
            client.logout()
        assert GenerationRun.objects.get(pk=run.pk).status == run.status, url
    # Staff with every generation permission, but without the admin role, are offered no action (tests/
    # test_admin_roles.py walks every admin this way).
    staff = User.objects.create_user(username="sam", is_staff=True)
    staff.user_permissions.set(Permission.objects.filter(content_type__app_label="generation"))
    changelist = reverse("admin:generation_generationrun_changelist")
    listing = client_for(staff).get(changelist).content.decode()
    assert all(f'value="{name}"' not in listing for name in ("send_to_jury", "cancel", "resume"))
    client_for(staff).post(changelist, {"action": "cancel", "_selected_action": [running.pk]})
    assert GenerationRun.objects.get(pk=running.pk).status == "running"
    client.logout()

    admin = client_for(admin_user)
    assert admin.get(actions[0][0]).status_code == 405
    for url, _ in actions:
        assert admin.post(url).status_code == 302, url
    assert GenerationRun.objects.get(pk=running.pk).status == "cancelled"
    assert (
        GenerationRun.objects.get(pk=cancelled.pk).status == "succeeded"
    )  # resumed: nothing was left to ask
    admin_user.is_superuser = True
    admin_user.save()
    listing = client_for(admin_user).get(changelist).content.decode()
    assert all(f'value="{name}"' in listing for name in ("send_to_jury", "cancel", "resume"))


def test_pages_and_api_answers_are_never_stored_and_no_page_echoes_free_text(
    client_for, api_for, reviewer_user, sample
):
    reviewer = client_for(reviewer_user)
    for response in (
        reviewer.get(reverse("sample_detail", args=[sample.pk])),
        api_for(reviewer_user).get(reverse("api_sample_detail", args=[sample.pk])),
    ):
        assert response.status_code == 200
        assert "no-store" in response["Cache-Control"] and "private" in response["Cache-Control"]
    planted = "Call 555-0100 to verify your account"
    for page in ("agreement", "expert_home"):
        assert planted not in reviewer.get(reverse(page), {"message": planted}).content.decode()


def test_users_without_a_role_and_auditors_are_offered_no_page_they_may_not_open(client_for, outsider, db):
    from django.contrib.auth.models import Group, User

    auditor = User.objects.create_user("svc-nav")
    auditor.groups.add(Group.objects.get_or_create(name="auditor")[0])
    for user in (outsider, auditor):
        refused = client_for(user).get(reverse("dashboard"))  # the "not allowed" page, in the app's layout
        nav = (
            refused.content.decode()
            .split('<nav id="site-nav" aria-label="Main">', 1)[1]
            .split("</nav>", 1)[0]
        )
        assert refused.status_code == 403 and f'href="{reverse("api_docs")}"' in nav, user
        for name in ("dashboard", "sample_list", "jury_run_list", "expert_home", "training_runs"):
            assert f'href="{reverse(name)}"' not in nav, (user, name)


@pytest.mark.parametrize("who", ["expert_user", "reviewer_user", "admin_user"])
def test_each_role_is_offered_the_pages(client_for, request, who):
    page = client_for(request.getfixturevalue(who)).get(reverse("dashboard")).content.decode()
    nav = page.split('<nav id="site-nav" aria-label="Main">', 1)[1].split("</nav>", 1)[0]
    for name in ("dashboard", "sample_list", "jury_run_list", "expert_home", "training_runs", "api_docs"):
        assert f'href="{reverse(name)}"' in nav, name
