from __future__ import annotations

import io
import json
import os
import socket
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User
from django.db import connection
from PIL import Image
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from common.roles import ADMIN, EXPERT, REVIEWER

REQUIRE_SERVICES = os.environ.get("GUARDTRACE_REQUIRE_SERVICES") == "1"
REDIS_URL = os.environ.get("GUARDTRACE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(autouse=True)
def _services(request):
    """Skip tests whose service is not there; under CI (GUARDTRACE_REQUIRE_SERVICES=1) fail them instead."""
    missing = []
    if request.node.get_closest_marker("postgres") and connection.vendor != "postgresql":
        missing.append("PostgreSQL: run with DATABASE_URL=postgres://… (as .ci/run does)")
    if request.node.get_closest_marker("redis") and not _reachable_url(REDIS_URL):
        missing.append(f"Redis at {REDIS_URL}")
    if missing:
        message = "needs " + " and ".join(missing)
        if REQUIRE_SERVICES:
            pytest.fail(f"{message} (GUARDTRACE_REQUIRE_SERVICES=1)")
        pytest.skip(message)


def _reachable_url(url: str) -> bool:
    from urllib.parse import urlparse

    parsed = urlparse(url)
    return _reachable(parsed.hostname or "127.0.0.1", parsed.port or 6379)


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return Path(settings.MEDIA_ROOT)


def _user(username: str, *roles: str, staff: bool = False) -> User:
    user = User.objects.create_user(username=username, password="pw-" + username, is_staff=staff)
    # Transactional tests flush the groups the data migration made, so make sure they exist.
    user.groups.set([Group.objects.get_or_create(name=role)[0] for role in roles])
    return user


@pytest.fixture
def admin_user(db) -> User:
    return _user("alice", ADMIN, staff=True)


@pytest.fixture
def expert_user(db) -> User:
    return _user("erin", EXPERT)


@pytest.fixture
def reviewer_user(db) -> User:
    return _user("rob", REVIEWER)


@pytest.fixture
def outsider(db) -> User:
    """Logged in, but holding no role."""
    return _user("oscar")


@pytest.fixture
def client_for(client):
    def login(user: User):
        client.force_login(user)
        return client

    return login


@pytest.fixture
def api_for():
    def make(user: User | None) -> APIClient:
        api = APIClient()
        if user is not None:
            token, _ = Token.objects.get_or_create(user=user)
            api.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        return api

    return make


def png_bytes(color=(200, 30, 30), size=(16, 16)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def record(**overrides) -> dict:
    base = {
        "question": "How do I bake bread?",
        "thinking": "The user asks about baking.\n\nI can explain the steps.",
        "answer": "Mix flour, water, yeast and salt; knead; bake.",
        "subset": "unit",
        "split": "train",
        "category": "other",
    }
    base.update(overrides)
    return base


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """A tiny random Qwen2.5-VL checkpoint, built once per test session, read-only for tests."""
    from qta.tiny import build_tiny_guard

    return build_tiny_guard(tmp_path_factory.mktemp("tiny") / "guard", texts=["Step 1. Step 2."])


@pytest.fixture(scope="session")
def lively_dir(tmp_path_factory) -> Path:
    """A tiny checkpoint with large random weights: its greedy output depends on its input (for batching tests)."""
    from qta.tiny import TinySpec, build_tiny_guard

    return build_tiny_guard(
        tmp_path_factory.mktemp("lively") / "guard", spec=TinySpec(initializer_range=0.6, seed=3)
    )


def admin_action(client, changelist: str, action: str, rows, **extra) -> list[tuple[int, str]]:
    """Run a Django admin action on `rows` from the changelist named `changelist` (e.g.
    "admin:jury_juror_changelist"); the (level, text) of each message it leaves."""
    from django.urls import reverse

    response = client.post(
        reverse(changelist),
        {"action": action, "_selected_action": [row.pk for row in rows], **extra},
        follow=True,
    )
    assert response.status_code == 200
    return [(m.level, m.message) for m in response.context["messages"]]
