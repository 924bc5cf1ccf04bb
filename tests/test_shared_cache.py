"""The API's rate limits hold across web processes: two gunicorn processes share one cache (the database cache
embedded, Redis in production), so a limit of 10 a minute lets 10 calls through, not 10 per process."""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User
from django.core.cache.backends.db import DatabaseCache
from django.core.cache.backends.redis import RedisCache
from django.urls import reverse
from rest_framework.authtoken.models import Token

from common.roles import AUDITOR
from tests.conftest import REDIS_URL
from tests.workers import _database_url, web_server

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent


def _status(url: str, *, data: bytes | None = None, headers: dict | None = None) -> int:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@contextmanager
def _gunicorn(tmp_path: Path, env: dict[str, str], name: str):
    """One sync web process; yields its URL and its access log (a line a request: pid, status, path)."""
    log = tmp_path / f"{name}-access.log"
    options = ("--workers", "1", "--access-logfile", str(log), "--access-logformat", "%(p)s %(s)s %(U)s")
    with web_server(env, *options) as url:
        yield url, log


def _auditor() -> tuple[User, str]:
    user = User.objects.create_user("svc-throttle")
    user.groups.add(Group.objects.get_or_create(name=AUDITOR)[0])
    return user, Token.objects.create(user=user).key


@pytest.mark.parametrize("backend", ["database", pytest.param("redis", marks=pytest.mark.redis)])
def test_the_audit_rate_limit_is_shared_by_two_web_processes(tmp_path, backend):
    user, token = _auditor()
    env = {k: v for k, v in os.environ.items() if k != "GUARDTRACE_CACHE_URL"}
    env.update(
        DATABASE_URL=_database_url(), GUARDTRACE_VAR_DIR=str(tmp_path / "var"), GUARDTRACE_AUDIT_RATE="10/min"
    )
    # The throttle's key for this user: emptied first, in case an earlier run (a user with the same id) left one.
    key = f"throttle_audit_{user.pk}"
    if backend == "redis":
        env["GUARDTRACE_CACHE_URL"] = REDIS_URL
        RedisCache(REDIS_URL, {}).delete(key)
    else:
        DatabaseCache("guardtrace_cache", {}).delete(key)

    # Two web processes (two servers, so each call's process is known, not left to the kernel's choice of worker).
    with (
        _gunicorn(tmp_path, env, "first") as (first, first_log),
        _gunicorn(tmp_path, env, "second") as (second, _),
    ):
        # An empty body: the call passes the rate limit and is refused by validation (400) before any model runs,
        # or is refused by the rate limit (429). One call at a time, alternating between the two processes.
        statuses = Counter(
            _status(
                f"{url}{reverse('api_audit')}",
                data=json.dumps({}).encode(),
                headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
            )
            for _ in range(15)
            for url in (first, second)
        )

    # With a cache in each process's memory, each would have let 10 through (20 in all).
    assert statuses == {400: 10, 429: 20}
    assert len(re.findall(r"^<\d+> \d+ /api/v1/audit$", first_log.read_text(), re.MULTILINE)) == 15
