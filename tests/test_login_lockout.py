"""Login lockout (django-axes): after GUARDTRACE_LOGIN_FAILURES wrong passwords for one username from one address,
even the right password is refused for the cool-off, on the app's login and the admin's; a success clears the count;
other users and other addresses are not locked; an admin can unlock from the command line."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from axes.models import AccessAttempt
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parent.parent
LOGIN = "/accounts/login/"
ADDRESS = "198.51.100.7"


@pytest.fixture(autouse=True)
def _fast_hasher(settings):
    """Dozens of logins per test: a cheap hash for the users these tests make (the lockout does not depend on it)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _login(client, username: str, password: str, *, url: str = LOGIN, address: str = ADDRESS, **meta):
    return client.post(url, {"username": username, "password": password}, REMOTE_ADDR=address, **meta)


def _logged_in(response) -> bool:
    return response.status_code == 302 and response.wsgi_request.user.is_authenticated


def _fail(client, username: str, times: int, **kwargs) -> None:
    for _ in range(times):
        response = _login(client, username, "wrong password", **kwargs)
        assert response.status_code in (200, 429) and not response.wsgi_request.user.is_authenticated


def _assert_locked_page(response, username: str) -> None:
    assert response.status_code == 429
    # The login form was answered, then replaced by the lockout page.
    assert "registration/locked_out.html" in [template.name for template in response.templates]
    page = response.content.decode()
    assert "Login locked" in page and username in page and "15 minutes" in page
    assert not response.wsgi_request.user.is_authenticated


def test_the_defaults_are_five_failures_and_fifteen_minutes(settings):
    assert settings.AXES_FAILURE_LIMIT == 5
    assert settings.AXES_COOLOFF_TIME.total_seconds() == 15 * 60
    assert settings.AXES_LOCKOUT_PARAMETERS == [["username", "ip_address"]]


def test_the_right_password_is_refused_after_five_wrong_ones(client, expert_user):
    _fail(client, "erin", 4)
    assert _login(client, "erin", "wrong password").status_code == 429  # the fifth locks
    response = _login(client, "erin", "pw-erin")
    _assert_locked_page(response, "erin")
    assert client.get(reverse("dashboard")).status_code == 302  # still not logged in


def test_four_wrong_passwords_do_not_lock(client, expert_user):
    _fail(client, "erin", 4)
    assert _logged_in(_login(client, "erin", "pw-erin"))


def test_after_the_cool_off_the_right_password_logs_in(client, expert_user):
    _fail(client, "erin", 5)
    _assert_locked_page(_login(client, "erin", "pw-erin"), "erin")
    # Sixteen minutes pass (the attempts are what the lockout counts from).
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=16))
    assert _logged_in(_login(client, "erin", "pw-erin"))


def test_just_before_the_cool_off_ends_it_is_still_locked(client, expert_user):
    _fail(client, "erin", 5)
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=14))
    _assert_locked_page(_login(client, "erin", "pw-erin"), "erin")


def test_a_successful_login_starts_the_count_again(client, expert_user):
    _fail(client, "erin", 4)
    assert _logged_in(_login(client, "erin", "pw-erin"))
    client.post(reverse("logout"))
    _fail(client, "erin", 4)  # four more: eight in all, but only four since the success
    assert _logged_in(_login(client, "erin", "pw-erin"))


def test_another_user_at_the_same_address_is_not_locked(client, expert_user, reviewer_user):
    _fail(client, "erin", 5)
    assert _logged_in(_login(client, "rob", "pw-rob"))


def test_the_same_user_from_another_address_is_not_locked(client, expert_user):
    _fail(client, "erin", 5)
    assert _logged_in(_login(client, "erin", "pw-erin", address="203.0.113.9"))


def test_a_forged_forwarded_for_header_does_not_escape_the_lockout(client, expert_user, settings):
    # Behind one proxy, the proxy's own entry (the last) is the address; what the client put before it is ignored.
    settings.GUARDTRACE_PROXY_COUNT = 1
    for forged in ("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"):
        _fail(client, "erin", 1, address="172.16.0.2", HTTP_X_FORWARDED_FOR=f"{forged}, {ADDRESS}")
    response = _login(
        client, "erin", "pw-erin", address="172.16.0.2", HTTP_X_FORWARDED_FOR=f"10.9.9.9, {ADDRESS}"
    )
    _assert_locked_page(response, "erin")
    # A different client behind the same proxy is not locked.
    other = _login(client, "erin", "pw-erin", address="172.16.0.2", HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert _logged_in(other)


def test_the_admin_login_is_locked_too_with_the_same_page(client, admin_user):
    admin_login = reverse("admin:login")
    _fail(client, "alice", 5, url=admin_login)
    _assert_locked_page(_login(client, "alice", "pw-alice", url=admin_login), "alice")
    assert client.get(reverse("admin:index")).status_code == 302


def test_an_admin_unlocks_a_user_from_the_command_line(client, expert_user):
    _fail(client, "erin", 5)
    _assert_locked_page(_login(client, "erin", "pw-erin"), "erin")
    call_command("axes_reset_username", "erin")
    assert _logged_in(_login(client, "erin", "pw-erin"))


def test_the_limits_come_from_the_environment(tmp_path):
    env = {
        **os.environ,
        "GUARDTRACE_VAR_DIR": str(tmp_path),
        "GUARDTRACE_LOGIN_FAILURES": "3",
        "GUARDTRACE_LOCKOUT_MINUTES": "60",
    }
    code = "from django.conf import settings; print(settings.AXES_FAILURE_LIMIT, settings.AXES_COOLOFF_TIME)"
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-v", "0", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["3", "1:00:00"]
    bad_env = {**env, "GUARDTRACE_LOGIN_FAILURES": "0"}
    bad = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=bad_env, capture_output=True, text=True
    )
    assert bad.returncode != 0 and "GUARDTRACE_LOGIN_FAILURES" in bad.stderr
