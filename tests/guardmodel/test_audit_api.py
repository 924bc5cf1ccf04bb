"""POST /api/v1/audit: token-authenticated, size-limited, clear 4xx on bad input."""

from __future__ import annotations

import base64

import pytest
from django.contrib.auth.models import Group, User
from django.urls import reverse

from guardmodel import services
from tests.conftest import png_bytes
from tests.loopback import LoopbackOpenAI, closed_port_url

URL = "/api/v1/audit"
GOOD = {"question": "How is it made?", "thinking": "Here are the steps: one, two.", "answer": "I can't help."}


@pytest.fixture
def auditor(db) -> User:
    user = User.objects.create_user("svc")
    user.groups.add(Group.objects.get_or_create(name="auditor")[0])
    return user


@pytest.fixture
def loopback():
    with LoopbackOpenAI() as server:
        yield server


@pytest.fixture
def endpoint_guard(db, loopback):
    return services.checkpoint_register(
        name="served", endpoint=loopback.url, served_model="guard-3b", activate=True
    )


def test_the_route_is_the_documented_one():
    assert reverse("api_audit") == URL


def test_anonymous_and_roleless_callers_are_refused(api_for, outsider, endpoint_guard, loopback):
    assert api_for(None).post(URL, GOOD, format="json").status_code == 401
    assert api_for(outsider).post(URL, GOOD, format="json").status_code == 403
    assert loopback.requests == []


def test_an_auditor_gets_the_guards_judgment(api_for, auditor, endpoint_guard, loopback):
    image = base64.b64encode(png_bytes(size=(24, 24))).decode()
    response = api_for(auditor).post(URL, {**GOOD, "image": f"data:image/png;base64,{image}"}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["status"], body["judgment"], body["harmful"], body["checkpoint"]) == (
        "valid",
        1.0,
        True,
        "served",
    )
    assert body["analysis"] == "The reasoning was read." and body["prompt_version"] == "qta-v1"
    assert body["latency_ms"] > 0 and loopback.images == [(24, 24)]


def test_a_multipart_upload_works_too(api_for, auditor, endpoint_guard, loopback):
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("x.png", png_bytes(size=(10, 12)), content_type="image/png")
    response = api_for(auditor).post(URL, {**GOOD, "thinking": "fine", "image": upload}, format="multipart")
    assert response.status_code == 200 and response.json()["judgment"] == 0.0
    assert loopback.images == [(10, 12)]


@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        ({"thinking": "t", "answer": "a"}, "question", "required"),
        ({**GOOD, "question": ""}, "question", "may not be blank"),
        ({**GOOD, "image": "not base64!!"}, "image", "not valid base64"),
        ({**GOOD, "image": base64.b64encode(b"plain text").decode()}, "image", "could not be decoded"),
        ({**GOOD, "image": 42}, "image", "expected an image file or a base64 string"),
        ({**GOOD, "image": "data:image/png;base64"}, "image", "needs a comma before its base64"),
        ({**GOOD, "thinking": "x" * 2001}, "thinking", "no more than 2000 characters"),
        ({**GOOD, "checkpoint": "nope"}, "checkpoint", "no checkpoint named 'nope'"),
    ],
)
def test_malformed_requests_get_a_400_naming_the_field(api_for, auditor, endpoint_guard, loopback, settings,
                                                       payload, field, message):  # fmt: skip
    settings.GUARDTRACE_AUDIT_MAX_TEXT_CHARS = 2000
    response = api_for(auditor).post(URL, payload, format="json")
    assert response.status_code == 400, response.content
    assert message in " ".join(response.json()[field])
    assert "object at 0x" not in response.content.decode()  # no Python object names in an answer
    assert loopback.requests == []


def test_an_image_over_the_byte_limit_is_refused(api_for, auditor, endpoint_guard, settings):
    settings.GUARDTRACE_MAX_IMAGE_BYTES = 100
    image = base64.b64encode(png_bytes(size=(64, 64)) + b"\0" * 200).decode()
    response = api_for(auditor).post(URL, {**GOOD, "image": image}, format="json")
    assert response.status_code == 400 and "over the limit of 100 bytes" in response.json()["image"][0]


def test_a_body_that_is_not_json_is_a_400(api_for, auditor, endpoint_guard):
    response = api_for(auditor).post(URL, "{not json", content_type="application/json")
    assert response.status_code == 400 and "JSON parse error" in response.json()["detail"]


def test_no_active_checkpoint_is_a_503(api_for, auditor):
    response = api_for(auditor).post(URL, GOOD, format="json")
    assert response.status_code == 503 and response.json()["detail"] == "no active guard checkpoint"


def test_an_unreachable_guard_is_a_502_after_retries(api_for, auditor, db, settings):
    services.checkpoint_register(name="down", endpoint=closed_port_url(), activate=True)
    from qta.endpoint import RetryPolicy

    services.backend_for(services.active_checkpoint()).retry = RetryPolicy(attempts=2, base_delay_s=0.01)
    response = api_for(auditor).post(URL, GOOD, format="json")
    assert response.status_code == 502 and "Unreachable" in response.json()["detail"]
