"""The admin's launch form and actions, the run page with its live JSON, the lineage and snapshot pages."""

from __future__ import annotations

import pytest
from django.urls import reverse

from guardmodel.services import checkpoint_register
from tests.training.test_runs import _consensus
from training.models import DatasetSnapshot, TrainingRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_user(admin_user):
    admin_user.is_superuser = True  # Django admin model permissions
    admin_user.save()
    return admin_user


@pytest.fixture
def base(tiny_base):
    return checkpoint_register(name="tiny-base", path=str(tiny_base), base_model="tiny")


def test_the_admin_previews_the_snapshot_and_launches_an_sft_round(client_for, admin_user, base):
    _consensus(6)
    client = client_for(admin_user)
    url = reverse("admin:training_trainingrun_add") + "?stage=sft"
    page = client.get(url)
    assert page.status_code == 200
    body = page.content.decode()
    assert "New SFT round" in body and "d3_0: 6" in body and "learning_rate" in body
    assert "full fine-tuning of a 3B VLM" in body  # each hyperparameter shows its reason

    response = client.post(url, {"base_checkpoint": base.pk, "preset": "tiny", "hp_epochs": "2"})
    run = TrainingRun.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("training_run", args=[run.pk])
    assert run.status == "pending" and run.hyperparameters["epochs"] == 2.0
    assert run.hyperparameters["learning_rate"] == 3e-3  # the tiny preset, where not overridden
    assert run.snapshot.counts["origin"] == {"d3_0": 6}


def test_the_admin_form_says_why_a_round_cannot_launch(client_for, admin_user, base):
    client = client_for(admin_user)
    url = reverse("admin:training_trainingrun_add") + "?stage=sft"
    response = client.post(url, {"base_checkpoint": base.pk, "preset": "default"})
    assert response.status_code == 200 and "training set is empty" in response.content.decode()
    response = client.post(url, {"base_checkpoint": base.pk, "preset": "default", "hp_learning_rate": "7"})
    assert "learning_rate: 7.0 is not in (0, 1)" in response.content.decode()
    sft = TrainingRun.objects.create(stage="sft", status="running", base_checkpoint=base)
    page = client.get(reverse("admin:training_trainingrun_add") + f"?stage=dpo&parent={sft.pk}")
    assert "has not finished with a checkpoint" in page.content.decode()
    assert TrainingRun.objects.count() == 1


def test_new_dpo_round_action_opens_the_form_for_the_selected_run(client_for, admin_user, base):
    out = checkpoint_register(name="sft-out", path=base.path)
    sft = TrainingRun.objects.create(
        stage="sft", status="succeeded", base_checkpoint=base, output_checkpoint=out
    )
    client = client_for(admin_user)
    response = client.post(reverse("admin:training_trainingrun_changelist"),
                           {"action": "new_dpo_round", "_selected_action": [sft.pk]})  # fmt: skip
    assert response.status_code == 302 and response["Location"].endswith(f"?stage=dpo&parent={sft.pk}")
    page = client.get(response["Location"]).content.decode()
    assert "New DPO round from SFT run" in page and "sft-out" in page and "DPO training set is empty" in page


def test_run_lineage_and_snapshot_pages_show_progress_to_roles_only(
    client_for, admin_user, expert_user, outsider, base
):
    _consensus(4)
    from training.services import training_run_launch

    run = training_run_launch(stage="sft", base_checkpoint=base, tiny=True, enqueue=False)
    TrainingRun.objects.filter(pk=run.pk).update(
        step=3,
        max_steps=10,
        loss=0.5,
        history=[{"step": 1, "epoch": 0.1, "loss": 2.0}, {"step": 3, "epoch": 0.3, "loss": 0.5}],
    )
    out = checkpoint_register(name="sft-run-x", path=base.path)
    TrainingRun.objects.filter(pk=run.pk).update(output_checkpoint=out)
    snapshot = DatasetSnapshot.objects.get()
    pages = [reverse("training_run", args=[run.pk]), reverse("checkpoint_lineage", args=[out.pk]),
             reverse("training_snapshot", args=[snapshot.pk]), reverse("training_runs")]  # fmt: skip
    for url in pages:
        assert client_for(outsider).get(url).status_code == 403
    client = client_for(expert_user)
    detail = client.get(pages[0]).content.decode()
    assert "step 3/10" in detail and "Cancel" not in detail  # experts watch; admins control
    progress = client.get(pages[0] + "?format=json").json()
    assert progress["history"][-1]["loss"] == 0.5 and progress["status"] == "pending"
    lineage = client.get(pages[1]).content.decode().split('<ol class="lineage">')[1]
    assert lineage.index("tiny-base") < lineage.index(
        "sft-run-x"
    )  # from the base model to the round's output
    assert snapshot.content_hash in client.get(pages[2]).content.decode()
    admin_page = client_for(admin_user).get(pages[0]).content.decode()
    assert "Cancel" in admin_page
    response = client_for(admin_user).post(reverse("training_run_cancel", args=[run.pk]))
    assert response.status_code == 302 and TrainingRun.objects.get(pk=run.pk).status == "cancelled"
    assert client_for(expert_user).post(reverse("training_run_resume", args=[run.pk])).status_code == 403


def test_the_launch_preview_reports_the_long_record_before_anything_is_queued(client_for, admin_user, base):
    from annotation.strata import stratify
    from tests.annotation.factories import SampleFactory
    from tests.experts.review_helpers import jury_votes

    _consensus(6)
    long = SampleFactory(thinking="Then one more step is considered. " * 3000, split="train")
    jury_votes(long, (0.0, 0.0, 0.0))
    stratify(sample_ids=[long.pk])
    client = client_for(admin_user)
    url = reverse("admin:training_trainingrun_add") + "?stage=sft"
    response = client.post(url, {"base_checkpoint": base.pk, "preset": "tiny", "_preview": "Preview"})
    body = response.content.decode()
    assert response.status_code == 200 and 'id="token-budget"' in body
    assert "1024 tokens per record" in body and "counted with tiny-base" in body
    assert "1 of 7 records: each keeps its image, question and answer and loses the middle" in body
    assert f"sample #{long.pk}:" in body
    # Nothing queued or stored.
    assert TrainingRun.objects.count() == 0 and DatasetSnapshot.objects.count() == 0
    # A budget the base checkpoint sets is the one counted; the launch form's GET counts with the active guard.
    base.max_input_tokens = 200_000
    base.is_active = True
    base.save()
    page = client.get(url).content.decode()
    assert "200000 tokens per record" in page and "0 of 7 records" in page
