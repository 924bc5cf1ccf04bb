"""The audit API never runs a local checkpoint in the web process: the audit worker (queue `audit`) judges, the web
process waits for its answer, at most GUARDTRACE_AUDIT_TIMEOUT_S, and answers 504 past that."""

from __future__ import annotations

import time

import pytest
from django.contrib.auth.models import Group, User

from guardmodel import services
from tests.workers import filesystem_broker, worker

URL = "/api/v1/audit"
GOOD = {"question": "How is it made?", "thinking": "", "answer": "I can't help."}

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def auditor(db) -> User:
    user = User.objects.create_user("svc")
    user.groups.add(Group.objects.get_or_create(name="auditor")[0])
    return user


def _loaded_here() -> int:
    return len(services._backends)


def test_a_local_checkpoint_is_judged_on_the_audit_worker_not_in_the_web_process(
    api_for, auditor, tiny_dir, tmp_path, settings
):
    services.checkpoint_register(name="tiny", path=str(tiny_dir), activate=True)
    services._backends.clear()
    with worker(
        "filesystem://",
        filesystem_broker(tmp_path),
        settings.MEDIA_ROOT,
        queues="audit",
        extra_env={"CELERY_RESULT_BACKEND": settings.CELERY_RESULT_BACKEND},
    ):
        answers = [api_for(auditor).post(URL, GOOD, format="json") for _ in range(3)]
    for response in answers:
        assert response.status_code == 200, response.content
        body = response.json()
        # An untrained tiny model does not follow the format: an invalid verdict, saying why.
        assert body["status"] == "invalid" and body["judgment"] is None and body["error"]
        assert body["checkpoint"] == "tiny" and body["latency_ms"] > 0
    assert _loaded_here() == 0  # the model was never loaded in this (the web) process


def test_without_an_audit_worker_the_call_is_a_504_within_the_timeout(api_for, auditor, tiny_dir, settings):
    services.checkpoint_register(name="tiny", path=str(tiny_dir), activate=True)
    services._backends.clear()
    settings.GUARDTRACE_AUDIT_TIMEOUT_S = 1.0
    started = time.monotonic()
    response = api_for(auditor).post(URL, GOOD, format="json")
    waited = time.monotonic() - started
    assert response.status_code == 504
    assert "audit worker did not answer within 1 s" in response.json()["detail"]
    assert waited < 5 and _loaded_here() == 0


def test_input_over_the_limit_is_refused_before_any_model_or_worker_is_asked(
    api_for, auditor, tiny_dir, settings
):
    services.checkpoint_register(name="tiny", path=str(tiny_dir), activate=True)
    settings.GUARDTRACE_AUDIT_MAX_TEXT_CHARS = 100
    # No worker runs: a call that reached the queue would wait 30 s.
    settings.GUARDTRACE_AUDIT_TIMEOUT_S = 30.0
    started = time.monotonic()
    response = api_for(auditor).post(URL, {**GOOD, "thinking": "x" * 101}, format="json")
    assert response.status_code == 400 and "no more than 100 characters" in str(response.json()["thinking"])
    assert time.monotonic() - started < 5
