"""The round launch form: filled with the values the round would use, yes/no fields that say Yes or No, reasons that
agree with the values, the resulting config previewed before launch, and the server as the authority on what a
round runs with. Also the admin's figures to 4 significant figures."""

from __future__ import annotations

import json
import re

import pytest
from django.urls import reverse

from guardmodel.services import checkpoint_register
from qta.hyper import for_stage
from tests.training.test_runs import _consensus
from training.admin import RoundForm, round_initial
from training.models import DatasetSnapshot, TrainingRun

pytestmark = pytest.mark.django_db

ADD = reverse("admin:training_trainingrun_add")


@pytest.fixture
def admin_user(admin_user):
    admin_user.is_superuser = True  # Django admin model permissions
    admin_user.save()
    return admin_user


@pytest.fixture
def base(tiny_base):
    return checkpoint_register(name="tiny-base", path=str(tiny_base), base_model="tiny", activate=True)


def _shown(response, name: str) -> str:
    """A field's value as the page holds it (the selected option of a select)."""
    return str(response.context["form"][name].value())


def _config(response) -> dict:
    body = response.content.decode()
    block = re.search(r'<pre id="round-config"[^>]*>(.*?)</pre>', body, re.S)
    assert block, "no config block on the page"
    return json.loads(block.group(1).replace("&quot;", '"'))


def _filled(response) -> dict[str, str]:
    """Every field as the page was filled, as a browser would post it back untouched."""
    form = response.context["form"]
    data = {name: form[name].value() for name in form.fields}
    return {name: "" if value is None else str(getattr(value, "pk", value)) for name, value in data.items()}


def test_it_fills_the_fields_with_the_3b_defaults_when_no_tiny_checkpoint_is_active(client_for, admin_user):
    page = client_for(admin_user).get(ADD + "?stage=sft")
    body = page.content.decode()
    defaults = for_stage("sft").to_dict()
    assert _shown(page, "preset") == "default"
    for name, value in defaults.items():
        assert _shown(page, f"hp_{name}") == str(value), name
    # Yes / No, never Django's three-way "Unknown".
    assert "Unknown" not in body
    assert re.search(r'<option value="True" selected>Yes</option>', body)  # freeze_vision
    assert re.search(r'<option value="False" selected>No</option>', body)  # lora
    # The effective batch is worked out from the values shown, not quoted from a reason.
    assert "effective batch of 32" not in body
    assert "4 × 8 × 1 process = 32 records per update" in body
    assert _config(page) == defaults


def test_it_fills_the_tiny_preset_and_the_base_budget_for_the_active_tiny_checkpoint(
    client_for, admin_user, base
):
    base.max_input_tokens = 2048
    base.save()
    page = client_for(admin_user).get(ADD + "?stage=sft")
    tiny = for_stage("sft", tiny=True, max_input_tokens=2048).to_dict()
    assert _shown(page, "preset") == "tiny" and _shown(page, "base_checkpoint") == str(base.pk)
    assert _shown(page, "hp_batch_size") == "8" and _shown(page, "hp_max_length") == "2048"
    assert "8 × 1 × 1 process = 8 records per update" in page.content.decode()
    assert _config(page) == tiny


def test_a_dpo_round_is_filled_for_its_parent_checkpoint(client_for, admin_user, base):
    out = checkpoint_register(name="sft-out", path=base.path, max_input_tokens=3000)
    sft = TrainingRun.objects.create(
        stage="sft", status="succeeded", base_checkpoint=base, output_checkpoint=out
    )
    page = client_for(admin_user).get(ADD + f"?stage=dpo&parent={sft.pk}")
    assert "base_checkpoint" not in page.context["form"].fields
    assert _shown(page, "hp_max_length") == "3000" and _shown(page, "hp_learning_rate") == str(5e-7)
    assert _config(page) == for_stage("dpo", max_input_tokens=3000).to_dict()


def test_the_preview_resolves_fields_left_alone_to_the_new_preset_and_keeps_edits(
    client_for, admin_user, base
):
    client = client_for(admin_user)
    base.is_active = False
    base.save()
    page = client.get(ADD + "?stage=sft")  # filled with the 3B defaults
    data = _filled(page)
    # Without the page's script: the preset switched to tiny, one field edited, the rest as filled.
    data.update(base_checkpoint=str(base.pk), preset="tiny", hp_epochs="2", _preview="1")
    response = client.post(ADD + "?stage=sft", data)
    expected = for_stage("sft", tiny=True, epochs=2.0).to_dict()
    assert response.status_code == 200 and _config(response) == expected
    # The form now shows what the preview resolved: the tiny values, the edit kept.
    assert _shown(response, "hp_batch_size") == "8" and _shown(response, "hp_epochs") == "2.0"
    assert _shown(response, "filled_preset") == "tiny"
    assert TrainingRun.objects.count() == 0 and DatasetSnapshot.objects.count() == 0


def test_launching_the_form_as_filled_runs_the_previewed_config(client_for, admin_user, base):
    _consensus(6)
    client = client_for(admin_user)
    page = client.get(ADD + "?stage=sft")
    previewed = _config(page)
    data = _filled(page)
    data["hp_lora"] = "True"  # one yes/no override
    response = client.post(ADD + "?stage=sft", data)
    run = TrainingRun.objects.get()
    assert response.status_code == 302
    assert run.hyperparameters == {**previewed, "lora": True}


def test_the_server_refuses_what_the_config_block_could_not_resolve(client_for, admin_user, base):
    client = client_for(admin_user)
    data = _filled(client.get(ADD + "?stage=sft"))
    data.update(hp_learning_rate="7", _preview="1")
    body = client.post(ADD + "?stage=sft", data).content.decode()
    assert 'id="config-error"' in body and "learning_rate: 7.0 is not in (0, 1)" in body
    data.update(hp_batch_size="two")
    body = client.post(ADD + "?stage=sft", data).content.decode()
    assert "correct the fields marked above" in body
    assert TrainingRun.objects.count() == 0


def test_only_fields_that_differ_from_what_was_filled_are_overrides():
    initial = round_initial("sft", preset="default", base=None)
    data = {name: str(value) for name, value in initial.items() if value is not None}
    data.update(preset="tiny", hp_seed="7", filled_base="")
    form = RoundForm(data, stage="sft")
    assert form.is_valid(), form.errors
    assert form.overrides() == {"seed": 7}


def test_the_admin_shows_figures_to_four_significant_figures(client_for, admin_user):
    run = TrainingRun.objects.create(
        stage="sft", status="succeeded", loss=0.6931471805599453, reward_margin=1.23456789, epoch=2.99999
    )
    client = client_for(admin_user)
    listing = client.get(reverse("admin:training_trainingrun_changelist")).content.decode()
    assert "0.6931" in listing and "0.6931471805599453" not in listing
    detail = client.get(reverse("admin:training_trainingrun_change", args=[run.pk])).content.decode()
    assert "0.6931" in detail and "1.235" in detail and "0.6931471805599453" not in detail


def test_the_form_counts_the_processes_a_round_runs_in(client_for, admin_user, base, settings):
    settings.GUARDTRACE_TRAIN_GPUS = 2
    body = client_for(admin_user).get(ADD + "?stage=sft").content.decode()
    assert (
        "8 × 1 × 2 processes = 16 records per update" in body and 'id="config-processes">2 processes' in body
    )
