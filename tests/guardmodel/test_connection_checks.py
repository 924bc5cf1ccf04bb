"""The admin's "Test connection" on guard checkpoints: a served one asked over real loopback HTTP for the model it
is called with, and a local one whose directory is looked at, never loaded."""

from __future__ import annotations

import pytest
from django.contrib.messages import constants
from django.urls import reverse

from guardmodel.models import GuardCheckpoint
from tests.conftest import admin_action
from tests.loopback import LoopbackOpenAI, closed_port_url


@pytest.fixture
def admin_client(client_for, admin_user):
    admin_user.is_superuser = True
    admin_user.save()
    return client_for(admin_user)


def _test(client, *checkpoints: GuardCheckpoint, **extra) -> list[tuple[int, str]]:
    return admin_action(
        client, "admin:guardmodel_guardcheckpoint_changelist", "test_connection", checkpoints, **extra
    )


def test_a_served_checkpoint_is_asked_for_the_model_it_is_called_with(admin_client, settings):
    settings.GUARDTRACE_ENDPOINT_CHECK_S = 1.0  # a checkpoint has no timeout of its own: the check's
    down = closed_port_url()
    with (
        LoopbackOpenAI(models=["guard-sft"]) as served,
        LoopbackOpenAI(models=["guard-dpo"]) as other,
        LoopbackOpenAI(models=["guard-sft"], faults=["timeout"], hang_s=3) as stalled,
    ):
        checkpoints = [
            # Called by its served model name; by its path when it has none (as the guard backend does).
            GuardCheckpoint.objects.create(name="a", endpoint=served.url, served_model="guard-sft"),
            GuardCheckpoint.objects.create(name="b", endpoint=other.url, path="guard-sft"),
            GuardCheckpoint.objects.create(name="c", endpoint=down),
            GuardCheckpoint.objects.create(name="d", endpoint=stalled.url, served_model="guard-sft"),
        ]
        messages = _test(admin_client, *checkpoints)
    by_name = {text.split(":", 1)[0]: (level, text) for level, text in messages}
    assert by_name["checkpoint a"][0] == constants.SUCCESS
    assert by_name["checkpoint a"][1].endswith(f"'guard-sft' is served ({served.url}/models)")
    level, text = by_name["checkpoint b"]
    assert level == constants.ERROR and text.endswith(
        f"'guard-sft' is not served at {other.url}: it serves guard-dpo"
    )
    assert f"not reachable at {down}/models — connection refused" in by_name["checkpoint c"][1]
    assert (
        by_name["checkpoint d"][1]
        == f"checkpoint d: no answer from {stalled.url}/models — timed out after 1 s"
    )


def test_a_local_checkpoint_answers_where_it_loads_from(admin_client, tmp_path):
    directory = tmp_path / "guard"
    directory.mkdir()
    (directory / "config.json").write_text("{}")
    for name in ("model.safetensors", "tokenizer.json", "preprocessor_config.json"):
        (directory / name).write_bytes(b"never loaded by the check")
    local = GuardCheckpoint.objects.create(name="local", path=str(directory))
    missing = GuardCheckpoint.objects.create(name="missing", path=str(tmp_path / "nowhere"))
    hub = GuardCheckpoint.objects.create(name="hub", path="org/guard-model")
    answers = _test(admin_client, local, missing, hub)
    messages = {text.split(":", 1)[0]: (level, text) for level, text in answers}
    assert messages["checkpoint local"] == (
        constants.SUCCESS,
        f"checkpoint local: local checkpoint: loads from {directory}",
    )
    assert messages["checkpoint missing"][1].endswith("checkpoint directory does not exist")
    assert messages["checkpoint hub"] == (
        constants.ERROR,
        "checkpoint hub: 'org/guard-model' is not a local directory: transformers would look it up as a hub id, "
        "and nothing is downloaded at run time",
    )


def test_the_change_page_tests_its_checkpoint(admin_client):
    with LoopbackOpenAI(models=["guard-sft"]) as served:
        checkpoint = GuardCheckpoint.objects.create(
            name="served", endpoint=served.url, served_model="guard-sft"
        )
        change = reverse("admin:guardmodel_guardcheckpoint_change", args=[checkpoint.pk])
        assert ">Test connection</button>" in admin_client.get(change).content.decode()
        response = admin_client.post(
            reverse("admin:guardmodel_guardcheckpoint_changelist"),
            {"action": "test_connection", "_selected_action": [checkpoint.pk], "_from_change_page": "1"},
        )
    assert response.status_code == 302 and response["Location"] == change
    assert "Checkpoint served: reachable — HTTP 200" in admin_client.get(change).content.decode()
