from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from guardtrace.env import ImproperEnv, env_bool, env_int, env_list, env_path, env_str

ROOT = Path(__file__).resolve().parent.parent


def test_typed_helpers_read_and_refuse(monkeypatch, tmp_path):
    monkeypatch.setenv("X_BOOL", "yes")
    monkeypatch.setenv("X_INT", "12")
    monkeypatch.setenv("X_LIST", "a.example, b.example")
    assert env_bool("X_BOOL", False) is True
    assert env_int("X_INT", 0, minimum=1) == 12
    assert env_list("X_LIST", []) == ["a.example", "b.example"]
    assert env_str("X_MISSING", "default") == "default"
    for name, value, call, message in [
        ("X_BOOL", "maybe", lambda: env_bool("X_BOOL", False), "expected a boolean"),
        ("X_INT", "twelve", lambda: env_int("X_INT", 0), "expected an integer"),
        ("X_INT", "0", lambda: env_int("X_INT", 5, minimum=1), "must be at least 1"),
        ("X_LIST", "a,,b", lambda: env_list("X_LIST", []), "empty item"),
        ("X_PATH", "relative/dir", lambda: env_path("X_PATH", tmp_path), "expected an absolute path"),
    ]:
        monkeypatch.setenv(name, value)
        with pytest.raises(ImproperEnv, match=message):
            call()


def test_secrets_can_come_from_a_file(monkeypatch, tmp_path):
    (tmp_path / "secret").write_text("s3cret\n")
    monkeypatch.setenv("X_SECRET_FILE", str(tmp_path / "secret"))
    assert env_str("X_SECRET", "") == "s3cret"
    monkeypatch.setenv("X_SECRET_FILE", str(tmp_path / "missing"))
    with pytest.raises(ImproperEnv, match="X_SECRET_FILE"):
        env_str("X_SECRET", "")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DATABASE_URL", "mysql://root@localhost/db", "only sqlite:// and postgres://"),
        ("CELERY_BROKER_URL", "amqp://guest@localhost//", "expected filesystem:// or redis://"),
        ("DEBUG", "perhaps", "DEBUG='perhaps': expected a boolean"),
    ],
)
def test_the_app_refuses_to_start_with_bad_settings(tmp_path, name, value, message):
    env = {**os.environ, name: value, "GUARDTRACE_VAR_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert message in result.stderr


def _check(tmp_path, *args: str, **settings: str) -> subprocess.CompletedProcess:
    # The browser tests set DJANGO_ALLOW_ASYNC_UNSAFE in this process; a deployment never has it.
    dropped = {"SECRET_KEY", "DEBUG", "DATABASE_URL", "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update(settings, GUARDTRACE_VAR_DIR=str(tmp_path))
    return subprocess.run(
        [sys.executable, "manage.py", "check", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )


@pytest.mark.parametrize("debug", ["false", "true"])
def test_production_never_runs_on_the_public_development_key(tmp_path, debug):
    result = _check(tmp_path, GUARDTRACE_PRODUCTION="true", DEBUG=debug)
    assert result.returncode != 0 and "SECRET_KEY must be set" in result.stderr
    short = _check(tmp_path, GUARDTRACE_PRODUCTION="true", DEBUG=debug, SECRET_KEY="too-short")
    assert short.returncode != 0 and "at least 50 characters" in short.stderr


def test_the_documented_production_settings_pass_djangos_deployment_checks(tmp_path):
    # Every check Django and the apps register (the API schema's among them), not only the security tag.
    result = _check(
        tmp_path, "--deploy", "--fail-level", "WARNING",
        GUARDTRACE_PRODUCTION="true", SECRET_KEY="k" * 20 + "-production-secret-of-sixty-characters-xyz",
        ALLOWED_HOSTS="guard.example.org", SECURE_COOKIES="true", SECURE_SSL_REDIRECT="true",
        SECURE_HSTS_SECONDS="31536000", SECURE_HSTS_INCLUDE_SUBDOMAINS="true", SECURE_HSTS_PRELOAD="true",
        SECURE_PROXY_SSL_HEADER="true",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    # Without the HTTPS settings the same check names each one: nothing insecure passes quietly.
    plain = _check(
        tmp_path, "--deploy", "--tag", "security", "--fail-level", "WARNING",
        GUARDTRACE_PRODUCTION="true", SECRET_KEY="k" * 20 + "-production-secret-of-sixty-characters-xyz",
    )  # fmt: skip
    assert plain.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in plain.stderr + plain.stdout, warning
