"""Training rounds: refusals before launch, a crash, cancel, resume, one round per device, deleted images, a
long trace cut to the budget."""

from __future__ import annotations

import json
import shutil
import threading
import time

import pytest
from django.urls import reverse

from annotation.models import Sample
from guardmodel.models import GuardCheckpoint
from guardmodel.services import checkpoint_register
from tests.annotation.factories import ImageAssetFactory, SampleFactory
from tests.experts.review_helpers import jury_votes
from training import services
from training.models import TrainingRun
from training.services import TrainingError

pytestmark = pytest.mark.django_db(transaction=True)


def _consensus(count: int, *, harmful_every: int = 2, image_every: int = 3) -> list[Sample]:
    """Train-split samples the jury agreed on 3:0, alternating safe and harmful."""
    from annotation.strata import stratify

    samples = []
    for n in range(count):
        image = ImageAssetFactory() if n % image_every == 0 else None
        sample = SampleFactory(question=f"Question {n}: how to do thing {n}?", image=image, split="train")
        vote = 1.0 if harmful_every and n % harmful_every == 0 else 0.0
        jury_votes(sample, (vote, vote, vote))
        samples.append(sample)
    stratify(sample_ids=[s.pk for s in samples])
    return samples


@pytest.fixture
def base(tiny_base):
    return checkpoint_register(name="tiny-base", path=str(tiny_base), base_model="tiny")


def _wait(predicate, timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _read(path) -> str:
    return path.read_text() if path.is_file() else ""


def test_resume_skips_a_checkpoint_whose_save_was_cut_short(tmp_path):
    from qta.runner import last_complete_checkpoint

    for step, complete in ((4, True), (8, True), (12, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"weights")
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-8"
    assert not (tmp_path / "checkpoint-12").exists()  # the half-written save is removed, not resumed from
    (tmp_path / "checkpoint-8" / "trainer_state.json").unlink()
    (tmp_path / "checkpoint-4" / "trainer_state.json").unlink()
    assert last_complete_checkpoint(tmp_path) is None


def test_an_empty_or_one_class_training_set_is_refused_before_launch(base):
    with pytest.raises(TrainingError, match="SFT training set is empty: no train-split D3:0 samples"):
        services.training_run_launch(stage="sft", base_checkpoint=base, enqueue=False)
    _consensus(6, harmful_every=0)
    with pytest.raises(TrainingError, match="6 records, all safe"):
        services.training_run_launch(stage="sft", base_checkpoint=base, enqueue=False)
    with pytest.raises(TrainingError, match="DPO training set is empty"):
        out = checkpoint_register(name="sft-out", path=base.path)
        sft = TrainingRun.objects.create(
            stage="sft", status="succeeded", base_checkpoint=base, output_checkpoint=out
        )
        services.training_run_launch(stage="dpo", parent=sft, enqueue=False)
    assert TrainingRun.objects.count() == 1  # nothing launched


def test_a_base_checkpoint_path_that_does_not_exist_is_refused(tmp_path):
    _consensus(6)
    missing = GuardCheckpoint.objects.create(name="gone", path=str(tmp_path / "nowhere"))
    with pytest.raises(
        TrainingError, match=r"base checkpoint gone: .*nowhere: checkpoint directory does not exist"
    ):
        services.training_run_launch(stage="sft", base_checkpoint=missing, enqueue=False)
    endpoint = GuardCheckpoint.objects.create(name="served", endpoint="http://vllm:8000/v1")
    with pytest.raises(TrainingError, match="needs a local checkpoint directory"):
        services.training_run_launch(stage="sft", base_checkpoint=endpoint, enqueue=False)


def test_a_dpo_stage_follows_its_parent_stage_and_uses_its_output_as_reference(base):
    sft_out = checkpoint_register(name="sft-out", path=base.path)
    sft = TrainingRun.objects.create(
        stage="sft", status="succeeded", base_checkpoint=base, output_checkpoint=sft_out
    )
    with pytest.raises(TrainingError, match="an SFT round starts from a base checkpoint"):
        services.check_lineage(stage="sft", parent=sft, reference=None)
    with pytest.raises(
        TrainingError, match="OGDPO round follows a DPO round, not a SFT one|follows a DPO round"
    ):
        services.check_lineage(stage="ogdpo", parent=sft, reference=None)
    with pytest.raises(
        TrainingError, match="reference tiny-base is not the parent stage's output.*must be sft-out"
    ):
        services.check_lineage(stage="dpo", parent=sft, reference=base)
    services.check_lineage(stage="dpo", parent=sft, reference=sft_out)
    running = TrainingRun.objects.create(stage="sft", status="running", base_checkpoint=base, device="other")
    with pytest.raises(TrainingError, match="has not finished with a checkpoint"):
        services.check_lineage(stage="dpo", parent=running, reference=None)
    # A round whose reference was changed behind its back is refused when it resumes.
    dpo = TrainingRun.objects.create(
        stage="dpo", status="failed", parent=sft, base_checkpoint=sft_out, reference_checkpoint=base
    )
    with pytest.raises(TrainingError, match="is not the parent stage's output"):
        services.training_run_resume(dpo, enqueue=False)


def test_deleted_images_are_refused_at_launch_and_fail_a_queued_round(base):
    samples = _consensus(6)
    with_image = next(s for s in samples if s.image_id)
    run = services.training_run_launch(stage="sft", base_checkpoint=base, tiny=True, enqueue=False)
    with_image.image.file.storage.delete(with_image.image.file.name)
    with pytest.raises(
        TrainingError, match=rf"1 image\(s\) of this training set were deleted: sample #{with_image.pk}"
    ):
        services.training_run_launch(stage="sft", base_checkpoint=base, enqueue=False)
    assert services.training_run_execute(run_id=run.pk) == "failed"
    run.refresh_from_db()
    assert f"sample #{with_image.pk}" in run.error and run.phase == "failed"


def test_a_crash_in_the_training_process_fails_the_round_with_its_traceback(base, tmp_path):
    _consensus(6)
    broken_dir = tmp_path / "broken"
    shutil.copytree(base.path, broken_dir)
    broken = checkpoint_register(name="broken", path=str(broken_dir))
    run = services.training_run_launch(stage="sft", base_checkpoint=broken, tiny=True, enqueue=False)
    (broken_dir / "model.safetensors").write_bytes(
        b"not a safetensors file"
    )  # corrupted after the launch checks
    assert services.training_run_execute(run_id=run.pk) == "failed"
    run.refresh_from_db()
    assert (
        run.status == "failed"
        and "Traceback" in run.error
        and "SafetensorError: Error while deserializing" in run.error
    )
    assert run.output_checkpoint is None
    services.training_run_resume(run, enqueue=False)  # a failed round can be queued again
    assert TrainingRun.objects.get(pk=run.pk).status == "pending"


def training_until_saved(run, timeout: float = 60.0) -> tuple[threading.Thread, dict[str, str]]:
    """Run the round in a thread, as its worker would, until it has saved a checkpoint."""
    outcome: dict[str, str] = {}
    driver = threading.Thread(
        target=lambda: outcome.update(first=services.training_run_execute(run_id=run.pk))
    )
    driver.start()
    folder = services.run_dir(run)
    _wait(lambda: '"saved"' in _read(folder / "progress.jsonl"), timeout=timeout, what="a saved checkpoint")
    return driver, outcome


def cancelled_and_resumed(run, driver: threading.Thread, outcome: dict[str, str], *, within_s: float) -> None:
    """Cancel the training round: it stops within `within_s` between its saves; resumed, it continues from the
    checkpoint it saved, not from step zero."""
    services.training_run_cancel(run)
    cancelled_at = time.monotonic()
    driver.join(timeout=30)
    assert outcome["first"] == "cancelled" and time.monotonic() - cancelled_at < within_s
    run.refresh_from_db()
    stopped_at = run.step
    assert run.status == "cancelled" and 0 < stopped_at < run.max_steps

    services.training_run_resume(run, enqueue=False)
    assert services.training_run_execute(run_id=run.pk) == "succeeded"
    run.refresh_from_db()
    assert run.resumes == 1 and run.step == run.max_steps and run.output_checkpoint is not None
    events = [
        json.loads(line) for line in (services.run_dir(run) / "progress.jsonl").read_text().splitlines()
    ]
    saved_step = int(next(e for e in events if e["event"] == "resume")["checkpoint"].split("-")[1])
    first_logged = next(e for e in events if e["event"] == "log")["step"]
    assert 0 < saved_step <= stopped_at and first_logged > saved_step


def test_cancel_stops_a_round_within_seconds_a_second_round_waits_and_resume_continues_from_the_checkpoint(
    base,
):
    _consensus(16)
    slow = {"epochs": 12.0, "batch_size": 2, "save_steps": 4, "logging_steps": 1}
    run = services.training_run_launch(
        stage="sft", base_checkpoint=base, tiny=True, hyperparameters=slow, enqueue=False
    )
    second = services.training_run_launch(stage="sft", base_checkpoint=base, tiny=True, enqueue=False)
    driver, outcome = training_until_saved(run)

    # The device is taken: the second round waits, queued, rather than training alongside.
    assert services.training_run_execute(run_id=second.pk) == "busy"
    second.refresh_from_db()
    assert second.status == "pending" and second.phase == f"waiting for cpu (run #{run.pk} is training)"
    cancelled_and_resumed(run, driver, outcome, within_s=8)


def test_a_round_on_a_set_holding_a_100k_character_trace_cuts_it_and_records_the_cut(
    base, client_for, admin_user
):
    from annotation.strata import stratify

    _consensus(6)
    thinking = "BEGINNING of the trace. " + "Then one more step is considered. " * 3000 + "END of the trace."
    long = SampleFactory(
        question="Question long: how to do it?", thinking=thinking, image=ImageAssetFactory(), split="train"
    )
    jury_votes(long, (1.0, 1.0, 1.0))
    stratify(sample_ids=[long.pk])
    run = services.training_run_launch(
        stage="sft", base_checkpoint=base, tiny=True, hyperparameters={"epochs": 1.0}, enqueue=False
    )
    assert services.training_run_execute(run_id=run.pk) == "succeeded"
    run.refresh_from_db()
    cut = run.truncation
    assert cut["longest_record"] == f"sample #{long.pk}" and cut["longest_tokens"] > 30_000
    assert (cut["max_length"], cut["records"], cut["cut"]) == (1024, 7, 1)
    assert cut["removed_total"] == cut["removed_max"] > 20_000
    assert run.output_checkpoint.max_input_tokens == 1024 and run.output_checkpoint.prompt_version == "qta-v1"
    page = client_for(admin_user).get(reverse("training_run", args=[run.pk])).content.decode()
    assert "1 of 7 records lost the middle of its reasoning" in page and f"sample #{long.pk}" in page
