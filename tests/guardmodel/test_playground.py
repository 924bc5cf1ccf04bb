"""The guard playground page: an input of one's own judged by a chosen checkpoint, as the audit API would judge it;
bad input named by field, a failing guard explained, nothing stored."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from annotation.models import AuditEvent, Label, Sample
from guardmodel import services
from tests.conftest import png_bytes
from tests.loopback import LoopbackOpenAI, closed_port_url

pytestmark = pytest.mark.django_db
GOOD = {"question": "How is it made?", "thinking": "The steps: one.\n\nStep two.", "answer": "I can't help."}


@pytest.fixture
def served():
    with LoopbackOpenAI() as server:
        services.checkpoint_register(
            name="served", endpoint=server.url, served_model="guard-3b", activate=True
        )
        yield server


def test_a_reviewer_judges_an_input_of_her_own_with_a_served_guard(client_for, reviewer_user, served):
    client = client_for(reviewer_user)
    page = client.get(reverse("guard_playground")).content.decode()
    assert "served (active) · served" in page and "Fill in the input" in page
    image = SimpleUploadedFile("x.png", png_bytes(size=(24, 24)), content_type="image/png")
    response = client.post(reverse("guard_playground"), {**GOOD, "checkpoint": "served", "image": image})
    body = response.content.decode()
    assert response.status_code == 200 and 'id="judgment">1</span>' in body and "harmful" in body
    assert "The reasoning was read." in body and "served · prompt qta-v1" in body
    assert GOOD["thinking"] in body  # the form keeps what was typed
    sent = served.requests[-1]["messages"]
    assert "Step two." in str(sent) and "image" in str(sent)  # the image went to the guard with the text
    assert not Label.objects.exists() and not Sample.objects.exists() and not AuditEvent.objects.exists()


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"question": ""}, "question: This field may not be blank."),
        ({"checkpoint": "nope"}, "checkpoint: "),
        ({"image": SimpleUploadedFile("x.png", b"not an image")}, "image: "),
    ],
)
def test_bad_input_is_named_by_field_and_nothing_is_asked(client_for, reviewer_user, served, change, says):
    before = len(served.requests)
    response = client_for(reviewer_user).post(reverse("guard_playground"), {**GOOD, **change})
    assert response.status_code == 400 and says in response.content.decode()
    assert len(served.requests) == before


def test_an_overlong_trace_is_refused_with_the_limit(client_for, reviewer_user, served, settings):
    settings.GUARDTRACE_AUDIT_MAX_TEXT_CHARS = 50
    response = client_for(reviewer_user).post(reverse("guard_playground"), {**GOOD, "thinking": "x" * 51})
    assert (
        response.status_code == 400
        and "thinking: 51 characters; no more than 50" in response.content.decode()
    )


def test_a_guard_that_cannot_be_reached_is_explained(client_for, reviewer_user):
    services.checkpoint_register(name="down", endpoint=closed_port_url(), served_model="g", activate=True)
    response = client_for(reviewer_user).post(reverse("guard_playground"), {**GOOD, "checkpoint": "down"})
    assert response.status_code == 502 and 'id="failure">the guard failed:' in response.content.decode()


def test_a_local_checkpoint_is_judged_on_the_audit_queue(client_for, reviewer_user, tiny_dir, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True  # the audit task runs here, as the audit worker would run it
    services.checkpoint_register(name="tiny", path=str(tiny_dir), activate=True)
    response = client_for(reviewer_user).post(reverse("guard_playground"), {**GOOD, "checkpoint": "tiny"})
    body = response.content.decode()
    # A random tiny model rarely follows the protocol: either way the page shows what the guard said.
    assert response.status_code == 200 and "tiny · prompt" in body and 'id="analysis"' in body


def test_without_a_role_the_playground_is_refused(client_for, outsider, client):
    assert client_for(outsider).get(reverse("guard_playground")).status_code == 403
    client.logout()
    assert client.get(reverse("guard_playground")).status_code == 302
