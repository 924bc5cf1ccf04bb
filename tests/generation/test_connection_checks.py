"""The admin's "Test connection" on generators: a served generator over real loopback HTTP (served, down, stalled,
refused, serving other models) and a local one whose checkpoint directory is looked at, never loaded."""

from __future__ import annotations

import pytest
from django.contrib.messages import constants
from django.urls import reverse

from generation.models import Generator
from tests.conftest import admin_action
from tests.loopback import LoopbackOpenAI, closed_port_url


@pytest.fixture
def admin_client(client_for, admin_user):
    admin_user.is_superuser = True
    admin_user.save()
    return client_for(admin_user)


def _generator(url: str, name: str, model: str = "reasoner", **fields) -> Generator:
    return Generator.objects.create(name=name, backend="openai", model_name=model, base_url=url, **fields)


def _test(client, *generators: Generator) -> list[tuple[int, str]]:
    return admin_action(client, "admin:generation_generator_changelist", "test_connection", generators)


def test_each_generator_gets_its_answer_in_one_action(admin_client, monkeypatch):
    monkeypatch.setenv("GT_TEST_GENERATOR_KEY", "sk-generator-secret")
    down = closed_port_url()
    with (
        LoopbackOpenAI(models=["reasoner"]) as served,
        LoopbackOpenAI(models=["reasoner"], faults=["timeout"], hang_s=4) as stalled,
        LoopbackOpenAI(models=["reasoner"], faults=[401]) as refusing,
        LoopbackOpenAI(models=["something-else"]) as other,
    ):
        generators = [
            _generator(served.url, "a-served"),
            _generator(down, "b-down"),
            _generator(stalled.url, "c-stalled", timeout_s=1),
            _generator(refusing.url, "d-refusing", api_key_env="GT_TEST_GENERATOR_KEY"),
            _generator(other.url, "e-other"),
        ]
        messages = _test(admin_client, *generators)
    levels = [level for level, _ in messages]
    assert levels == [constants.SUCCESS] + [constants.ERROR] * 4
    texts = [text for _, text in messages]
    assert texts[0].startswith("generator a-served: reachable — HTTP 200 in ")
    assert texts[0].endswith(f"'reasoner' is served ({served.url}/models)")
    assert texts[1].startswith(f"generator b-down: not reachable at {down}/models — connection refused")
    assert texts[2] == f"generator c-stalled: no answer from {stalled.url}/models — timed out after 1 s"
    assert "answered HTTP 401" in texts[3] and texts[3].endswith(
        "it refused the API key in GT_TEST_GENERATOR_KEY"
    )
    assert texts[4].endswith(f"but 'reasoner' is not served at {other.url}: it serves something-else")
    assert not any("sk-generator-secret" in text for text in texts)


def test_a_local_generator_is_checked_on_disk_and_the_change_page_offers_the_test(admin_client, tmp_path):
    local = Generator.objects.create(name="local", backend="transformers", model_name=str(tmp_path))
    change = reverse("admin:generation_generator_change", args=[local.pk])
    assert ">Test connection</button>" in admin_client.get(change).content.decode()
    response = admin_client.post(
        reverse("admin:generation_generator_changelist"),
        {"action": "test_connection", "_selected_action": [local.pk], "_from_change_page": "1"},
        follow=True,
    )
    assert response.redirect_chain[-1][0] == change
    [message] = response.context["messages"]
    assert message.level == constants.ERROR
    assert message.message == f"generator local: local checkpoint: {tmp_path}: missing config.json"
