"""While the audit API is saturated, an expert's pages answer as fast as ever: a call to a served guard holds one
of gunicorn's threads while it waits, and a local checkpoint runs on the audit worker, never in a web process.
(With the web server's sync workers, two slow audit calls held both processes and a page waited for them.)"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.models import Group, User
from django.contrib.sessions.backends.db import SessionStore
from rest_framework.authtoken.models import Token

from common.roles import AUDITOR, EXPERT
from guardmodel import services
from tests.annotation.factories import SampleFactory
from tests.loopback import LoopbackOpenAI
from tests.workers import _database_url, filesystem_broker, web_server, worker

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
ROOT = Path(__file__).resolve().parent.parent.parent
SLOW_GUARD_S = 3.0


def _get(url: str, headers: dict, data: bytes | None = None, timeout: float = 60) -> tuple[int, float]:
    started = time.monotonic()
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            code = response.status
    except urllib.error.HTTPError as error:
        code = error.code
    return code, time.monotonic() - started


def _session_cookie(user: User) -> str:
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    return f"{django_settings.SESSION_COOKIE_NAME}={session.session_key}"


def _page_times(url: str, cookie: str, n: int) -> list[float]:
    times = []
    for _ in range(n):
        code, seconds = _get(url, {"Cookie": cookie})
        assert code == 200, code
        times.append(seconds)
    return times


def _p95(times: list[float]) -> float:
    return statistics.quantiles(times, n=20)[-1]


def test_an_experts_pages_stay_fast_while_the_audit_api_is_saturated(tiny_dir, tmp_path, settings):
    for _ in range(20):
        SampleFactory()
    expert = User.objects.create_user("erin")
    expert.groups.add(Group.objects.get_or_create(name=EXPERT)[0])
    auditor = User.objects.create_user("svc")
    auditor.groups.add(Group.objects.get_or_create(name=AUDITOR)[0])
    token = Token.objects.create(user=auditor).key
    cookie = _session_cookie(expert)
    services.checkpoint_register(name="tiny", path=str(tiny_dir), activate=False)

    broker = filesystem_broker(tmp_path)
    results = f"file://{tmp_path / 'results'}"
    (tmp_path / "results").mkdir()
    env = {**os.environ, "DATABASE_URL": _database_url(), "GUARDTRACE_VAR_DIR": str(tmp_path / "var"),
           "MEDIA_ROOT": settings.MEDIA_ROOT, "CELERY_RESULT_BACKEND": results,
           "GUARDTRACE_AUDIT_RATE": "100000/min", "GUARDTRACE_AUDIT_TIMEOUT_S": "60"}  # fmt: skip
    with (
        LoopbackOpenAI(delay_s=SLOW_GUARD_S) as slow_guard,
        worker(
            "filesystem://",
            broker,
            settings.MEDIA_ROOT,
            queues="audit",
            extra_env={"CELERY_RESULT_BACKEND": results},
        ),  # fmt: skip
        # The web server as scripts/run_embedded.sh runs it: two processes, threads in each.
        web_server(env, "--workers", "2", "--worker-class", "gthread", "--threads", "8") as url,
    ):
        services.checkpoint_register(
            name="served", endpoint=slow_guard.url, served_model="guard", activate=True
        )
        page = f"{url}/samples/"
        _page_times(page, cookie, 3)  # warm both processes
        idle = _page_times(page, cookie, 20)

        stop = threading.Event()
        audits: list[int] = []

        def audit(checkpoint: str) -> None:
            body = json.dumps(
                {"question": "q?", "thinking": "", "answer": "a.", "checkpoint": checkpoint}
            ).encode()
            headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
            while not stop.is_set():
                audits.append(_get(f"{url}/api/v1/audit", headers, body)[0])

        # Six callers of the slow served guard (more than there are web processes) and two of the local one.
        callers = [threading.Thread(target=audit, args=("served",)) for _ in range(6)]
        callers += [threading.Thread(target=audit, args=("tiny",)) for _ in range(2)]
        for thread in callers:
            thread.start()
        time.sleep(1.0)  # every caller has a call in flight
        busy = _page_times(page, cookie, 20)
        stop.set()
        for thread in callers:
            thread.join(timeout=90)

    assert audits and set(audits) == {200}, audits
    print(f"expert page p95: idle {_p95(idle):.3f} s, audit API saturated {_p95(busy):.3f} s")
    # Unchanged within the noise of two shared cores; a page that waited for a slow audit call would take 3 s.
    assert _p95(busy) < max(1.0, 4 * _p95(idle)) < SLOW_GUARD_S
