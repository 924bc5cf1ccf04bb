"""A training round in two data-parallel processes (`accelerate launch`, gloo on this CPU as NCCL on GPUs): it trains
as one process does with the same effective batch, writes one checkpoint and one loss curve, and cancels and resumes
as a one-process round does."""

from __future__ import annotations

import json

import pytest

from guardmodel.models import GuardCheckpoint
from tests.training.test_runs import _consensus, cancelled_and_resumed, training_until_saved
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
    status = services.training_run_execute(run_id=run.pk)
    run.refresh_from_db()
    assert status == "succeeded", (run.error, run.log_tail[-3000:])  # why it failed, as the run recorded it
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
    driver, outcome = training_until_saved(run, timeout=120)
    cancelled_and_resumed(run, driver, outcome, within_s=10)


def test_the_rendezvous_port_is_held_for_the_launchers_store_alone():
    import datetime
    import errno
    import socket

    import torch.distributed as dist

    with services.reserve_port() as held:
        port = held.getsockname()[1]
        # While the round runs, no other program gets the port: not by asking for any free one, not by naming it.
        others = [socket.socket() for _ in range(300)]
        try:
            for other in others:
                other.bind(("127.0.0.1", 0))
            assert port not in {other.getsockname()[1] for other in others}
        finally:
            for other in others:
                other.close()
        with socket.socket() as other, pytest.raises(OSError) as refused:
            other.bind(("127.0.0.1", port))
        assert refused.value.errno == errno.EADDRINUSE
        # The launcher's rendezvous store listens on it all the same.
        store = dist.TCPStore("127.0.0.1", port, 1, True, timeout=datetime.timedelta(seconds=10))
        store.set("rendezvous", "ok")
        assert store.get("rendezvous") == b"ok"
        del store
    with services.reserve_port() as held:
        port = held.getsockname()[1]
    with socket.socket() as after:
        after.bind(("127.0.0.1", port))  # given back when the round ends
