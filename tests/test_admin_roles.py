"""Only the admin role changes anything through the Django admin. Staff holding every model permission but no role
are offered no action, add page or custom page of ours, and posting each action to its changelist changes no row
and queues nothing; the admin role is offered every action, and the same post runs it.

The tests walk `admin.site._registry`, so an action, admin or page added later is covered without editing them;
only a model whose admin has actions needs rows below (the test says which one is missing)."""

from __future__ import annotations

import re

import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.auth.models import Permission, User
from django.contrib.messages import get_messages
from django.core.files.base import ContentFile
from django.db.models import Model
from django.test import Client, RequestFactory
from django.urls import reverse

from annotation.models import ExportJob, ImportJob, Sample, Split
from generation.models import Expansion, GenerationRun, Generator, SeedSet
from guardmodel.models import GuardCheckpoint, GuardJob
from jury.models import Juror, JuryRun
from tests.annotation.factories import SampleFactory
from training.models import TrainingRun

pytestmark = pytest.mark.django_db

# What Django answers when the posted action is not one the user is offered (or nothing is selected).
_NOT_RUN = {
    "No action selected.",
    "Items must be selected in order to perform actions on them. No items have been changed.",
}


def _long_work(model: type[Model], **fields) -> list[Model]:
    """One row an action would stop, one it would start again."""
    return [model.objects.create(status=status, **fields) for status in ("running", "cancelled")]


def _rows() -> dict[type[Model], list[Model]]:
    """Rows for each model whose admin has actions, in states its actions act on (running, cancelled, inactive)."""
    checkpoint = GuardCheckpoint.objects.create(name="guard", path="/nowhere/guard")
    # Jurors and test samples make the Samples actions and "judge the test subsets" go through.
    juror = Juror.objects.create(
        name="juror", backend="openai", model_name="m", base_url="http://127.0.0.1:9/v1"
    )
    SampleFactory(split=Split.TEST)
    return {
        # "Test connection": a port where nothing listens answers at once.
        Juror: [juror],
        Generator: [
            Generator.objects.create(
                name="gen", backend="openai", model_name="g", base_url="http://127.0.0.1:9/v1"
            )
        ],
        Sample: [SampleFactory()],
        ImportJob: [
            ImportJob.objects.create(data_file=ContentFile(b"[]", name="r.json"), format="guardtrace")
        ],
        ExportJob: _long_work(ExportJob),
        GuardCheckpoint: [checkpoint],
        GuardJob: _long_work(GuardJob, checkpoint=checkpoint, prompt_version="qta-v1"),
        JuryRun: _long_work(JuryRun),
        TrainingRun: [
            TrainingRun.objects.create(stage="sft", status="running"),
            TrainingRun.objects.create(stage="sft", status="cancelled", device="cuda:1"),
        ],
        SeedSet: [SeedSet.objects.create(name="seeds")],
        Expansion: _long_work(Expansion),
        GenerationRun: _long_work(GenerationRun),
    }


def _our_actions(model_admin: admin.ModelAdmin) -> list[str]:
    """The admin's own actions (the Samples list's include those the guard and the jury add), not the site's."""
    return [a if isinstance(a, str) else a.__name__ for a in model_admin.actions or ()]


def _database() -> dict[str, list[dict]]:
    """Every row of every table (sessions aside: logging in writes one)."""
    return {
        model._meta.label: list(model._default_manager.order_by("pk").values())
        for model in apps.get_models()
        if model._meta.app_label != "sessions"
    }


def _ran(response, changelist: str) -> bool:
    """Whether the posted action ran: it said something, or answered with anything but the changelist."""
    said = {str(message) for message in get_messages(response.wsgi_request)} - _NOT_RUN
    if response.status_code == 302:
        return bool(said) or response["Location"] != changelist
    return bool(said) or "admin/change_list.html" not in [t.name for t in response.templates]


def _with_every_permission(user: User) -> User:
    user.user_permissions.set(Permission.objects.all())
    return User.objects.get(pk=user.pk)  # no cached permissions


@pytest.fixture
def staff() -> User:
    """Staff with every model permission (auth's included) and no role."""
    return _with_every_permission(User.objects.create_user(username="sam", is_staff=True))


@pytest.fixture
def admin_role(admin_user) -> User:
    """The admin role with the same model permissions: not a superuser, so the role alone makes the difference."""
    return _with_every_permission(admin_user)


def _request(user: User, url: str):
    request = RequestFactory().get(url)
    request.user = user
    return request


def test_staff_without_the_admin_role_are_offered_nothing_that_changes_anything(staff, admin_role):
    for model, model_admin in admin.site._registry.items():
        opts = model._meta
        changelist = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
        request = _request(staff, changelist)
        offered = set(model_admin.get_actions(request))
        assert offered <= {"delete_selected"}, (opts.label, offered)
        assert "delete_selected" not in offered or model_admin.has_delete_permission(request), opts.label
        assert not model_admin.has_add_permission(request), opts.label
        assert not model_admin.has_change_permission(request), opts.label
        # The admin role is offered every one of them.
        everything = set(model_admin.get_actions(_request(admin_role, changelist)))
        assert set(_our_actions(model_admin)) <= everything, (opts.label, everything)


def _client(user: User) -> Client:
    """A client of its own per post: no message left in a cookie by one post is read back after the next."""
    client = Client()
    client.force_login(user)
    return client


def test_posting_each_action_as_staff_without_the_role_changes_nothing_and_as_admin_runs_it(
    staff, admin_role, django_capture_on_commit_callbacks
):
    rows = _rows()
    checkpoint = rows[GuardCheckpoint][0]
    for model, model_admin in admin.site._registry.items():
        opts = model._meta
        changelist = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
        assert _client(staff).get(changelist).status_code == 200, opts.label
        for name in _our_actions(model_admin):
            assert model in rows, f"{opts.label} has actions: give it rows in _rows()"
            # The intermediate pages' answers too ("apply" with a checkpoint: the Samples list's guard action).
            form = {"action": name, "_selected_action": [row.pk for row in rows[model]], "apply": "1",
                    "checkpoint": checkpoint.pk}  # fmt: skip
            client = _client(staff)
            before = _database()
            with django_capture_on_commit_callbacks() as queued:
                response = client.post(changelist, form)
            assert _database() == before, (opts.label, name)
            assert not queued and not _ran(response, changelist), (opts.label, name)
            # The same post is how the admin role runs it (else this test would prove nothing).
            assert _ran(_client(admin_role).post(changelist, form), changelist), (opts.label, name)


def test_staff_without_the_admin_role_reach_no_add_or_custom_admin_page(staff):
    client = _client(staff)
    _rows()
    before = _database()
    for model, model_admin in admin.site._registry.items():
        opts = model._meta
        standard = {f"{opts.app_label}_{opts.model_name}_{page}" for page in ("changelist", "change", "history",
                                                                             "delete")}  # fmt: skip
        row = model._default_manager.order_by("pk").first()
        # The add page and our own (the seed sets' expand and generate; a user's password, of a row).
        for pattern in model_admin.get_urls():
            if not pattern.name or pattern.name in standard:
                continue
            if pattern.pattern.regex.groups and row is None:
                continue
            url = reverse(f"admin:{pattern.name}", args=[row.pk] if pattern.pattern.regex.groups else [])
            assert client.get(url).status_code == 403, url
            assert client.post(url, {}).status_code == 403, url
    assert _database() == before


def test_the_judge_samples_page_reads_its_answer_with_a_form_and_shows_a_bad_one(
    admin_role, django_capture_on_commit_callbacks
):
    active = GuardCheckpoint.objects.create(name="active", path="/nowhere/a", is_active=True)
    other = GuardCheckpoint.objects.create(name="other", endpoint="http://127.0.0.1:9/v1")
    ids = [SampleFactory().pk for _ in range(3)]
    client = _client(admin_role)
    changelist = reverse("admin:annotation_sample_changelist")
    form = {"action": "judge_samples_action", "_selected_action": ids[:2], "select_across": "0"}
    page = client.post(changelist, form).content.decode()
    # The active checkpoint comes chosen; the selection rides along to the answer.
    assert re.search(rf'value="{active.pk}"[^>]* checked', page) and not re.search(
        rf'value="{other.pk}"[^>]* checked', page
    )
    assert "active (active) — /nowhere/a" in page and "other — http://127.0.0.1:9/v1" in page
    assert [f'name="_selected_action" value="{pk}"' in page for pk in ids] == [True, True, False]
    for bad, error in (("abc", "Select a valid choice"), ("", "This field is required")):
        response = client.post(changelist, {**form, "apply": "1", "checkpoint": bad})
        assert response.status_code == 200 and error in response.content.decode(), bad
    assert not GuardJob.objects.exists()
    with django_capture_on_commit_callbacks() as queued:
        done = client.post(changelist, {**form, "apply": "1", "checkpoint": other.pk})
    job = GuardJob.objects.get()
    assert done.status_code == 302 and (job.checkpoint, job.sample_ids, len(queued)) == (
        other,
        sorted(ids[:2]),
        1,
    )
