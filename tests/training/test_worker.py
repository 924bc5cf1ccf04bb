"""A round on a real Celery worker (gpu queue, filesystem broker): the worker is killed mid-round (SIGKILL), its
training child stops by itself, the next worker to start marks the round interrupted, and resuming finishes it from
the last saved checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.training.test_runs import _consensus
from tests.workers import filesystem_broker, kill_worker, wait_for, worker
from training import services
from training.models import TrainingRun

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _runner_processes(folder: Path) -> list[int]:
    """Pids of training child processes working in `folder`."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"qta.runner" in args and str(folder).encode() in args:
            pids.append(int(cmdline.parent.name))
    return pids


def test_a_worker_killed_mid_round_leaves_it_interrupted_and_resume_finishes_it(
    tiny_base, tmp_path, settings
):
    from guardmodel.services import checkpoint_register

    base = checkpoint_register(name="tiny-base", path=str(tiny_base), base_model="tiny")
    _consensus(16)
    env = {
        "GUARDTRACE_TRAINING_DIR": str(settings.GUARDTRACE_TRAINING_DIR),
        "GUARDTRACE_TRAIN_DEVICE": "cpu",
        "GUARDTRACE_TRAIN_POLL_S": "0.2",
        "GUARDTRACE_GUARD_DEVICE": "cpu",
    }
    broker = ("filesystem://", filesystem_broker(tmp_path), settings.MEDIA_ROOT)
    slow = {"epochs": 12.0, "batch_size": 2, "save_steps": 4, "logging_steps": 1}
    with worker(*broker, queues="gpu", extra_env=env) as first:
        run = services.training_run_launch(stage="sft", base_checkpoint=base, tiny=True, hyperparameters=slow)
        folder = services.run_dir(run)
        progress = folder / "progress.jsonl"
        wait_for(
            lambda: progress.is_file() and '"saved"' in progress.read_text(), first, 120, "a saved checkpoint"
        )
        assert TrainingRun.objects.get(pk=run.pk).status == "running" and _runner_processes(folder)
        kill_worker(first)

    # The child notices its driver is gone and stops: nothing trains on behind the app's back.
    wait_for(lambda: not _runner_processes(folder), None, 15, "the training child to exit")
    stopped = TrainingRun.objects.get(pk=run.pk)
    assert stopped.status == "running"  # nobody was left to say otherwise
    with worker(*broker, queues="gpu", extra_env=env) as second:
        wait_for(
            lambda: TrainingRun.objects.get(pk=run.pk).status == "interrupted", second, 60, "interrupted"
        )
        interrupted = TrainingRun.objects.get(pk=run.pk)
        assert interrupted.phase == "interrupted: the worker stopped" and interrupted.resumable
        assert 0 < interrupted.step < interrupted.max_steps

        services.training_run_resume(interrupted)
        wait_for(
            lambda: TrainingRun.objects.get(pk=run.pk).finished, second, 240, "the resumed round to finish"
        )
    done = TrainingRun.objects.get(pk=run.pk)
    assert done.status == "succeeded", done.error
    assert done.resumes == 1 and done.step == done.max_steps and done.output_checkpoint is not None
    events = [json.loads(line) for line in progress.read_text().splitlines()]
    # The resumed process started from a saved checkpoint (the child may have saved one more in the second before
    # it noticed its driver was gone), not from step zero.
    resumed_from = int(next(e for e in events if e["event"] == "resume")["checkpoint"].split("-")[1])
    first_logged = next(e for e in events if e["event"] == "log")["step"]
    assert 0 < resumed_from < done.max_steps and first_logged > resumed_from
    steps = [entry["step"] for entry in done.history]  # one curve: the resumed steps replace the lost ones
    assert steps == sorted(set(steps)) and steps[-1] == done.max_steps and steps[0] == 1, steps
