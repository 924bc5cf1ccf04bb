"""A training round in two data-parallel processes (`accelerate launch`, gloo on this CPU as NCCL on GPUs): it trains
as one process does with the same effective batch, writes one checkpoint and one loss curve, and cancels and resumes
as a one-process round does."""

from __future__ import annotations

import json
import threading
import time

import pytest

from guardmodel.models import GuardCheckpoint
from tests.training.test_runs import _consensus, _read, _wait
from training import services

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def base(tiny_base):
    from guardmodel.services import checkpoint_register

    return checkpoint_register(name="tiny-base", path=str(tiny_base), base_model="tiny")


def _round(base, settings, processes: int, batch_size: int):
    settings.GUARDTRACE_TRAIN_GPUS = processes
    run = services.training_run_launch(
        stage="sft", base_checkpoint=base, tiny=True, enqueue=False,
        hyperparameters={"epochs": 4.0, "batch_size": batch_size, "logging_steps": 1, "seed": 3},
    )  # fmt: skip
    assert services.training_run_execute(run_id=run.pk) == "succeeded", run.error
    run.refresh_from_db()
    return run


def test_two_processes_train_as_one_with_the_same_effective_batch(base, settings):
    _consensus(32)
    one = _round(base, settings, 1, 8)
    checkpoints = GuardCheckpoint.objects.count()
    two = _round(base, settings, 2, 4)
    # The same number of updates of the same size, one loss curve, one checkpoint.
    assert two.max_steps == one.max_steps == 16 and two.step == two.max_steps
    assert [e["step"] for e in two.history] == [e["step"] for e in one.history]
    assert GuardCheckpoint.objects.count() == checkpoints + 1 and two.output_checkpoint is not None
    folder = services.run_dir(two)
    events = [json.loads(line) for line in (folder / "progress.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events].count("done") == 1 and (folder / "model" / "config.json").is_file()
    assert [e["processes"] for e in events if e["event"] == "start"] == [2]
    # Each process sees half of each batch, in its own order: the curves differ in detail, not in where they end.
    assert two.loss == pytest.approx(one.loss, rel=0.15), (one.loss, two.loss)
    first_one, first_two = one.history[0]["loss"], two.history[0]["loss"]
    assert two.loss < 0.7 * first_two and one.loss < 0.7 * first_one


def test_a_two_process_round_cancels_and_resumes_from_its_checkpoint(base, settings):
    _consensus(16)
    settings.GUARDTRACE_TRAIN_GPUS = 2
    slow = {"epochs": 12.0, "batch_size": 1, "save_steps": 4, "logging_steps": 1}
    run = services.training_run_launch(
        stage="sft", base_checkpoint=base, tiny=True, hyperparameters=slow, enqueue=False
    )
    outcome: dict[str, str] = {}
    driver = threading.Thread(
        target=lambda: outcome.update(first=services.training_run_execute(run_id=run.pk))
    )
    driver.start()
    folder = services.run_dir(run)
    _wait(lambda: '"saved"' in _read(folder / "progress.jsonl"), timeout=120, what="a saved checkpoint")
    services.training_run_cancel(run)
    cancelled_at = time.monotonic()
    driver.join(timeout=30)
    assert outcome["first"] == "cancelled" and time.monotonic() - cancelled_at < 10
    run.refresh_from_db()
    stopped_at = run.step
    assert run.status == "cancelled" and 0 < stopped_at < run.max_steps

    services.training_run_resume(run, enqueue=False)
    assert services.training_run_execute(run_id=run.pk) == "succeeded"
    run.refresh_from_db()
    assert run.resumes == 1 and run.step == run.max_steps and run.output_checkpoint is not None
    events = [json.loads(line) for line in (folder / "progress.jsonl").read_text().splitlines()]
    saved_step = int(next(e for e in events if e["event"] == "resume")["checkpoint"].split("-")[1])
    first_logged = next(e for e in events if e["event"] == "log")["step"]
    assert 0 < saved_step <= stopped_at and first_logged > saved_step
