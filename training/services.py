"""Training rounds: launch (with every check up front), the worker's drive of the child process, cancel, resume.

A round's life: launched PENDING and queued on the gpu worker → the worker claims its device (one running round per
device, a database constraint: a second launch waits) → OGDPO mines its training set → the child process trains,
reporting into files the worker copies into the run → the checkpoint is registered and judged on the test subsets.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from functools import lru_cache
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.utils import timezone

from annotation.models import ImageAsset, Sample, Split
from annotation.strata import jury_prompt_version
from common.errors import ApplicationError
from guardmodel.models import Evaluation, GuardCheckpoint, GuardJob
from guardmodel.prompts import TemplateError, template_for
from guardmodel.services import checkpoint_register, guard_job_create, guard_job_run, test_subsets
from qta import training_records
from qta.hyper import HyperparameterError, Hyperparameters, for_stage
from qta.loading import CheckpointError, check_checkpoint_dir, is_local, load_processor
from qta.protocol import PROMPT_VERSION, QA_PROMPT_VERSION
from qta.workers import worker_gone, worker_id
from training import datasets, mining
from training.datasets import SnapshotError
from training.models import PARENT_STAGE, DatasetSnapshot, Stage, TrainingRun

log = logging.getLogger(__name__)
Status = TrainingRun.Status
BASE_DIR = Path(__file__).resolve().parent.parent
LOG_TAIL = 6000
BUDGET_CACHE_S = 600


class TrainingError(ApplicationError):
    """A round that cannot be launched or resumed; the message says why."""


def run_dir(run: TrainingRun) -> Path:
    return Path(settings.GUARDTRACE_TRAINING_DIR) / "runs" / str(run.pk)


def train_device() -> str:
    device = settings.GUARDTRACE_TRAIN_DEVICE
    if device == "auto":
        import torch

        device = "cuda:0" if torch.cuda.is_available() else "cpu"
    return device


# -- launching ----------------------------------------------------------------------------------------------------


def _local_checkpoint(checkpoint: GuardCheckpoint | None, role: str) -> GuardCheckpoint:
    if checkpoint is None:
        raise TrainingError(f"{role}: choose a checkpoint")
    if not checkpoint.path or not is_local(checkpoint.path):
        raise TrainingError(
            f"{role} {checkpoint.name}: training needs a local checkpoint directory, not an endpoint"
        )
    try:
        check_checkpoint_dir(Path(checkpoint.path))
    except CheckpointError as exc:
        raise TrainingError(f"{role} {checkpoint.name}: {exc}") from None
    return checkpoint


def check_lineage(*, stage: str, parent: TrainingRun | None, reference: GuardCheckpoint | None) -> None:
    """A DPO stage's reference is its parent round's output: SFT's for DPO, DPO's for OGDPO."""
    if stage == Stage.SFT:
        if parent is not None or reference is not None:
            raise TrainingError(
                "an SFT round starts from a base checkpoint: it has no parent round or reference"
            )
        return
    wanted = PARENT_STAGE[Stage(stage)]
    if parent is None:
        raise TrainingError(f"a {Stage(stage).label} round starts from a finished {wanted.label} round")
    if parent.stage != wanted:
        raise TrainingError(
            f"{parent}: a {Stage(stage).label} round follows a {wanted.label} round, not a {parent.get_stage_display()} one"
        )
    output = parent.output_checkpoint
    if parent.status != Status.SUCCEEDED or output is None:
        raise TrainingError(
            f"{parent} has not finished with a checkpoint (it is {parent.get_status_display().lower()})"
        )
    if reference is not None and reference.pk != output.pk:
        raise TrainingError(
            f"reference {reference.name} is not the parent stage's output: the reference of this round must be "
            f"{output.name} (the checkpoint {parent} produced)"
        )


def round_hyperparameters(
    *, stage: str, base: GuardCheckpoint | None, tiny: bool = False, overrides: dict[str, Any] | None = None
) -> Hyperparameters:
    """A round's hyperparameters: the stage's defaults, the tiny preset, the base checkpoint's input budget as
    `max_length` (a round trains within the budget its checkpoint is judged with), then the overrides."""
    try:
        return for_stage(
            stage, tiny=tiny, max_input_tokens=base.max_input_tokens if base else None, **(overrides or {})
        )
    except HyperparameterError as exc:
        raise TrainingError(f"hyperparameters: {exc}") from None


@lru_cache(maxsize=2)
def _processor(path: str, max_pixels: int):
    """The base checkpoint's processor (tokenizer, chat template, image processor), never its weights."""
    return load_processor(path, max_pixels=max_pixels)


def _image_sizes(records: list[dict[str, Any]], hp: Hyperparameters) -> list[tuple[int, int] | None]:
    """(height, width) of each record's image, from the stored image rows (no pixels read); None without one."""
    if hp.withhold_image:
        return [None] * len(records)
    shas = {r["image"] for r in records if r.get("image")}
    sizes = {
        sha: (height, width)
        for sha, height, width in ImageAsset.objects.filter(sha256__in=shas).values_list(
            "sha256", "height", "width"
        )
    }
    return [sizes.get(r.get("image") or "") for r in records]


def budget_preview(
    *, stage: str, records: list[dict[str, Any]], base: GuardCheckpoint, hp: Hyperparameters
) -> dict[str, Any]:
    """How the round's token budget meets `records`: counted with the base checkpoint's tokenizer and template as
    the round will count them (`training_records.RecordBudget`), in this process, without the model."""
    started = time.perf_counter()
    try:
        template = training_records.round_template(template_for(base.prompt_version), hp.prompt_variant)
        path = str(Path(base.path).expanduser().resolve())
        processor = _processor(path, hp.max_pixels)
    except (CheckpointError, TemplateError) as exc:
        raise TrainingError(f"base checkpoint {base.name}: {exc}") from None
    # The launch counts the set the preview counted a moment before: the same count, remembered a while.
    counted = [stage, path, template.version, hp.max_length, hp.max_pixels, hp.withhold_image, records]
    key = "training-budget:" + hashlib.sha256(json.dumps(counted, sort_keys=True).encode()).hexdigest()
    if (cached := cache.get(key)) is not None:
        return cached
    fitter = training_records.RecordBudget(processor, template=template, stage=stage, budget=hp.max_length)
    result = fitter.preview(records, _image_sizes(records, hp))
    result.update(
        tokenizer=base.name, template=template.version, seconds=round(time.perf_counter() - started, 2)
    )
    cache.set(key, result, BUDGET_CACHE_S)
    return result


def _check_budget(
    stage: str, records: list[dict[str, Any]], base: GuardCheckpoint, hp: Hyperparameters
) -> None:
    """Refuse a set holding records that cannot fit the budget even without their reasoning."""
    unfit = budget_preview(stage=stage, records=records, base=base, hp=hp)["unfit"]
    if unfit:
        raise TrainingError(
            f"{len(unfit)} record(s) do not fit max_length {hp.max_length} even with all of their reasoning "
            f"removed (the image, question, answer and completion are never cut): {', '.join(unfit[:5])}; raise "
            "max_length or leave them out"
        )


def snapshot_preview(
    *,
    stage: str,
    parent: TrainingRun | None = None,
    prompt_version: str | None = None,
    base_checkpoint: GuardCheckpoint | None = None,
    snapshot: DatasetSnapshot | None = None,
    tiny: bool = False,
    hyperparameters: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What the round would train on, counted without storing or queueing anything (OGDPO: what is known before
    mining): records by origin and judgment, and under "budget" how the token budget meets them — the records over
    it, the longest one — counted with the base checkpoint's tokenizer (the parent's output for the DPO stages)."""
    prompt_version = prompt_version or jury_prompt_version()
    if stage == Stage.OGDPO and snapshot is None:
        dpo = parent.snapshot if parent is not None else None
        return {
            "to_mine": dpo.records if dpo else 0,
            "review": len(datasets.review_records(prompt_version)),
            "expert_pair": len(datasets.expert_pair_records(prompt_version)),
            "note": "hard negatives are mined when the round starts",
        }
    if snapshot is not None:
        try:
            records = datasets.snapshot_records(snapshot)
        except SnapshotError as exc:
            return {"refusal": str(exc)}
    elif stage == Stage.SFT:
        records = datasets.sft_build(prompt_version).records
    else:
        records = datasets.dpo_build(prompt_version).records
    counts = datasets.record_counts(stage, records)
    try:
        datasets.check_trainable(stage, records)
    except SnapshotError as exc:
        counts["refusal"] = str(exc)
        return counts
    base = parent.output_checkpoint if parent is not None else base_checkpoint
    if base is not None and records:
        try:
            base = _local_checkpoint(base, "base checkpoint")
            hp = round_hyperparameters(stage=stage, base=base, tiny=tiny, overrides=hyperparameters)
            counts["budget"] = budget_preview(stage=stage, records=records, base=base, hp=hp)
        except TrainingError as exc:
            counts["budget"] = {"error": str(exc)}
    return counts


def training_run_launch(
    *, stage: str, user=None, base_checkpoint: GuardCheckpoint | None = None, parent: TrainingRun | None = None,
    hyperparameters: dict[str, Any] | None = None, tiny: bool = False, prompt_version: str | None = None,
    snapshot: DatasetSnapshot | None = None, enqueue: bool = True,
) -> TrainingRun:  # fmt: skip
    """Check everything a round needs, store its snapshot (SFT / DPO) and queue it on the gpu worker.

    `snapshot` trains on a stored set (an imported one, say) instead of building it from the current labels; an
    OGDPO round given one skips mining."""
    if stage not in Stage.values:
        raise TrainingError(f"unknown stage {stage!r}: use one of {', '.join(Stage.values)}")
    prompt_version = prompt_version or jury_prompt_version()
    check_lineage(stage=stage, parent=parent, reference=None)
    reference = None
    if parent is not None:
        base_checkpoint = reference = parent.output_checkpoint
    base = _local_checkpoint(base_checkpoint, "base checkpoint")
    hp = round_hyperparameters(stage=stage, base=base, tiny=tiny, overrides=hyperparameters)
    records: list[dict[str, Any]] = []
    try:
        if snapshot is not None:
            if snapshot.stage != stage:
                raise SnapshotError(
                    f"snapshot #{snapshot.pk} trains {Stage(snapshot.stage).label} rounds, not {Stage(stage).label} ones"
                )
            records = datasets.snapshot_records(snapshot)
            datasets.check_trainable(stage, records)
            if gone := datasets.missing_images(records):
                raise SnapshotError(
                    f"{len(gone)} image(s) of snapshot #{snapshot.pk} were deleted: {', '.join(gone[:5])}"
                )
        elif stage == Stage.OGDPO:
            mining.oracle_juror()
            if parent is None or parent.snapshot is None:
                raise SnapshotError(f"{parent} has no training set to mine")
            if parent.snapshot.source == DatasetSnapshot.Source.IMPORTED:
                raise SnapshotError(
                    f"{parent} trained on an imported set, whose rows are not stored samples the checkpoint "
                    "could re-judge: choose an imported OGDPO set instead of mining"
                )
        else:
            built = (
                datasets.sft_build(prompt_version)
                if stage == Stage.SFT
                else datasets.dpo_build(prompt_version)
            )
            datasets.check_trainable(stage, built.records)
            if gone := datasets.missing_images(built.records):
                raise SnapshotError(
                    f"{len(gone)} image(s) of this training set were deleted: {', '.join(gone[:5])}"
                )
            records = built.records
    except SnapshotError as exc:
        raise TrainingError(str(exc)) from None
    if records:
        _check_budget(stage, records, base, hp)
    if snapshot is None and stage != Stage.OGDPO:
        try:
            snapshot = datasets.snapshot_store(built, user=user)
        except SnapshotError as exc:
            raise TrainingError(str(exc)) from None
    with transaction.atomic():
        run = TrainingRun.objects.create(
            stage=stage, parent=parent, base_checkpoint=base, reference_checkpoint=reference, snapshot=snapshot,
            hyperparameters=hp.to_dict(), device=train_device(), created_by=user, phase="queued",
        )  # fmt: skip
        if enqueue:
            _enqueue(run)
    return run


def _enqueue(run: TrainingRun) -> None:
    from training.tasks import training_run_task

    transaction.on_commit(lambda: training_run_task.delay(run.pk))


def training_run_cancel(run: TrainingRun) -> bool:
    """A queued round never starts; a running one's child process is stopped within the driver's poll interval."""
    return bool(
        TrainingRun.objects.filter(pk=run.pk, status__in=[Status.PENDING, Status.RUNNING]).update(
            status=Status.CANCELLED, phase="cancelled", finished_at=timezone.now()
        )
    )


def is_stale(run: TrainingRun) -> bool:
    if run.status != Status.RUNNING or run.heartbeat_at is None:
        return False
    return (timezone.now() - run.heartbeat_at).total_seconds() > settings.GUARDTRACE_TRAIN_STALE_S


def training_run_resume(run: TrainingRun, *, enqueue: bool = True) -> None:
    """Queue a failed, cancelled or interrupted round again; it continues from its last saved checkpoint."""
    resumable = [Status.FAILED, Status.CANCELLED, Status.INTERRUPTED]
    if is_stale(run):
        resumable.append(Status.RUNNING)
    if run.stage != Stage.SFT:
        check_lineage(stage=run.stage, parent=run.parent, reference=run.reference_checkpoint)
    _local_checkpoint(run.base_checkpoint, "base checkpoint")
    with transaction.atomic():
        if not TrainingRun.objects.filter(pk=run.pk, status__in=resumable).update(
            status=Status.PENDING,
            phase="queued (resume)",
            error="",
            finished_at=None,
            resumes=run.resumes + 1,
        ):
            raise TrainingError(
                f"{run} is {run.get_status_display().lower()}: only a stopped round can resume"
            )
        if enqueue:
            _enqueue(run)


def training_runs_interrupt_dead(*, host: str | None = None) -> int:
    """Mark running rounds whose driver is gone as interrupted: on this host, a driver process that no longer
    exists; anywhere, a driver silent for longer than GUARDTRACE_TRAIN_STALE_S. Called when a worker starts."""
    dead = []
    for run in TrainingRun.objects.filter(status=Status.RUNNING):
        if worker_gone(run.worker, host=host) or is_stale(run):
            dead.append(run.pk)
            ProgressReader(run, run_dir(run)).ingest()  # what the child wrote after its driver last looked
    return TrainingRun.objects.filter(pk__in=dead, status=Status.RUNNING).update(
        status=Status.INTERRUPTED, phase="interrupted: the worker stopped", finished_at=timezone.now()
    )


# -- the worker's side ----------------------------------------------------------------------------------------------


def _claim(run_id: int, worker: str) -> TrainingRun | None | str:
    """RUNNING with this worker as driver; "busy" when another round holds the device; None when not claimable."""
    try:
        with transaction.atomic():
            claimed = TrainingRun.objects.filter(pk=run_id, status=Status.PENDING).update(
                status=Status.RUNNING, worker=worker, heartbeat_at=timezone.now(), phase="starting",
                started_at=timezone.now(),
            )  # fmt: skip
    except IntegrityError:
        holder = TrainingRun.objects.filter(status=Status.RUNNING).values_list("pk", "device").first()
        TrainingRun.objects.filter(pk=run_id, status=Status.PENDING).update(
            phase=f"waiting for {holder[1]} (run #{holder[0]} is training)"
            if holder
            else "waiting for the device"
        )
        return "busy"
    if not claimed:
        return None
    return TrainingRun.objects.select_related("snapshot", "parent__snapshot", "base_checkpoint",
                                              "reference_checkpoint").get(pk=run_id)  # fmt: skip


def _set(run: TrainingRun, **fields: Any) -> bool:
    """Update a round this driver still holds (not cancelled meanwhile); False when it no longer runs."""
    return bool(TrainingRun.objects.filter(pk=run.pk, status=Status.RUNNING).update(**fields))


def training_run_execute(*, run_id: int, worker: str | None = None) -> str:
    """The gpu task's work: claim, (mine), train in a child process, register, evaluate. Returns the outcome:
    "busy" (the device is taken: try later), "skipped" (not pending), or the run's final status."""
    worker = worker or worker_id()
    run = _claim(run_id, worker)
    if run is None or isinstance(run, str):
        return run or "skipped"
    try:
        folder = run_dir(run)
        folder.mkdir(parents=True, exist_ok=True)
        if run.snapshot is None:
            _set(run, phase="mining hard negatives")
            built = mining.ogdpo_build(dpo_snapshot=run.parent.snapshot, checkpoint=run.reference_checkpoint)  # type: ignore[union-attr, arg-type]
            run.snapshot = datasets.snapshot_store(built, user=run.created_by)
            _set(run, snapshot=run.snapshot)
        _write_inputs(run, folder)
        _set(run, phase="training")
        outcome = _drive_child(run, folder)
        if outcome != Status.SUCCEEDED:
            return outcome
        checkpoint = _register(run, folder)
        _set(run, phase="evaluating")
        _evaluate(run, checkpoint)
    except Exception as exc:
        log.exception("training run %s failed", run_id)
        _set(run, status=Status.FAILED, phase="failed", finished_at=timezone.now(),
             error=f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc()}")  # fmt: skip
        return Status.FAILED
    _set(run, status=Status.SUCCEEDED, phase="done", finished_at=timezone.now())
    return Status.SUCCEEDED


def _write_inputs(run: TrainingRun, folder: Path) -> None:
    records = datasets.snapshot_records(run.snapshot)  # type: ignore[arg-type]
    if gone := datasets.missing_images(records):
        raise SnapshotError(f"{len(gone)} image(s) of the training set were deleted: {', '.join(gone[:5])}")
    (folder / "images").mkdir(exist_ok=True)
    paths = datasets.image_paths(records, copy_to=folder / "images")
    with (folder / "dataset.jsonl").open("w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps({**record, "image_path": paths.get(record.get("image") or "")}) + "\n")
    # The round trains with the template its checkpoint will be asked with: the base checkpoint's.
    template = template_for(run.base_checkpoint.prompt_version)  # type: ignore[union-attr]
    config = {
        "stage": run.stage, "base": run.base_checkpoint.path,  # type: ignore[union-attr]
        "reference": run.reference_checkpoint.path if run.reference_checkpoint else None,
        "hyperparameters": run.hyperparameters, "device": "cpu" if run.device == "cpu" else "cuda",
        "threads": settings.GUARDTRACE_TRAIN_THREADS, "template": training_records.template_spec(template),
    }  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    for name in ("error.json", "progress.jsonl"):
        (folder / name).unlink(missing_ok=True)


def _command(folder: Path, port: int | None) -> list[str]:
    """The round's child: one process, or GUARDTRACE_TRAIN_GPUS data-parallel processes under `accelerate launch`
    (torch.distributed: NCCL across GPUs, gloo on a CPU), their rendezvous on `port` (see reserve_port)."""
    if port is not None:
        return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
                "--num_processes", str(settings.GUARDTRACE_TRAIN_GPUS),
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
                "-m", "qta.runner", str(folder)]  # fmt: skip
    return [sys.executable, "-m", "qta.runner", str(folder)]


def reserve_port() -> socket.socket:
    """A loopback port held for a round's rendezvous while the round runs.

    The socket is bound with SO_REUSEADDR and never listens: the kernel hands its port to no other program (neither
    `bind(0)` nor an outgoing connection), and other binds fail; torch's rendezvous store, which binds with
    SO_REUSEADDR too, can still listen on it. Choosing a free port and closing the probe would leave the seconds the
    launcher takes to start for another program to take the port, and the round would fail at its rendezvous."""
    held = socket.socket()
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    held.bind(("127.0.0.1", 0))
    return held


def _drive_child(run: TrainingRun, folder: Path) -> str:
    env = {**os.environ, "GUARDTRACE_TRAIN_DRIVER_PID": str(os.getpid()), "PYTHONUNBUFFERED": "1"}
    with contextlib.ExitStack() as held:
        port = None
        if settings.GUARDTRACE_TRAIN_GPUS > 1:
            port = held.enter_context(reserve_port()).getsockname()[1]
        return _watch_child(run, folder, _command(folder, port), env)


def _watch_child(run: TrainingRun, folder: Path, command: list[str], env: dict[str, str]) -> str:
    with (folder / "log.txt").open("ab") as log_file:
        child = subprocess.Popen(
            command, cwd=BASE_DIR, env=env, stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopping it stops accelerate's workers too
        )  # fmt: skip
    reader = ProgressReader(run, folder)
    try:
        while True:
            code = child.poll()
            reader.ingest()
            if code is not None:
                break
            if not _set(run, heartbeat_at=timezone.now(), log_tail=_tail(folder / "log.txt")):
                _stop(child)  # cancelled: keep the figures it reached
                reader.ingest()
                TrainingRun.objects.filter(pk=run.pk).update(log_tail=_tail(folder / "log.txt"))
                return Status.CANCELLED
            time.sleep(settings.GUARDTRACE_TRAIN_POLL_S)
    except BaseException:
        _stop(child)
        raise
    reader.ingest()
    tail = _tail(folder / "log.txt")
    if code == 0 and (folder / "model" / "config.json").is_file():
        _set(run, log_tail=tail)
        return Status.SUCCEEDED
    _set(run, status=Status.FAILED, phase="failed", finished_at=timezone.now(), log_tail=tail,
         error=_failure(code, folder, tail))  # fmt: skip
    return Status.FAILED


def _stop(child: subprocess.Popen, grace_s: float = 5.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(child.pid, sig)
        except ProcessLookupError:
            return
        try:
            child.wait(timeout=grace_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _failure(code: int | None, folder: Path, tail: str) -> str:
    error_file = folder / "error.json"
    if error_file.is_file():
        error = json.loads(error_file.read_text())
        advice = ("Out of memory: lower batch_size or max_pixels, or turn on LoRA or gradient checkpointing.\n\n"
                  if error.get("oom") else "")  # fmt: skip
        return f"{advice}{error['type']}: {error['message']}\n\n{error['traceback']}"
    if code is not None and code < 0:
        reason = " (SIGKILL: often the system running out of memory)" if code == -signal.SIGKILL else ""
        return f"the training process was killed by signal {-code}{reason}\n\n{tail}"
    return f"the training process exited with status {code}\n\n{tail}"


def _tail(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - LOG_TAIL))
            return handle.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


class ProgressReader:
    """Copies new lines of the child's progress.jsonl into the run: the latest figures and the curve history."""

    def __init__(self, run: TrainingRun, folder: Path):
        # The file holds this start's events only (a resume starts it afresh); the curve before it is kept.
        self.run, self.path, self.offset = run, folder / "progress.jsonl", 0
        self.history = list(run.history)
        self.last: tuple[float, int] | None = None  # (time, step) of the previous log, for throughput

    def ingest(self) -> None:
        """Copy what is new (also after a cancel: the figures say where the round got to)."""
        if not self.path.is_file():
            return
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            chunk = handle.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self.offset += len(complete)
        fields: dict[str, Any] = {}
        for line in complete.decode("utf-8", "replace").splitlines():
            event = json.loads(line)
            fields.update(self._fields(event))
        if fields:
            fields["history"] = self.history
            TrainingRun.objects.filter(pk=self.run.pk).update(**fields)

    def _fields(self, event: dict[str, Any]) -> dict[str, Any]:
        if event["event"] == "truncation":  # the records cut to the token budget, before training starts
            return {"truncation": {k: v for k, v in event.items() if k not in ("event", "time")}}
        fields: dict[str, Any] = {}
        if "max_steps" in event:
            fields["max_steps"] = event["max_steps"]
        if "step" in event:
            fields["step"] = event["step"]
        if event["event"] == "log" and "train_loss" in event and not self.history:
            fields["loss"] = event["train_loss"]  # a round shorter than one logging interval: its mean loss
        if event["event"] != "log" or "loss" not in event:
            return fields
        hp = self.run.hyperparameters
        if self.last is not None and event["step"] > self.last[1]:
            per_step = (
                hp.get("batch_size", 1) * hp.get("gradient_accumulation", 1) * settings.GUARDTRACE_TRAIN_GPUS
            )
            fields["samples_per_second"] = (
                per_step * (event["step"] - self.last[1]) / max(1e-6, event["time"] - self.last[0])
            )
        self.last = (event["time"], event["step"])
        # The time of each logged step: the run page's ETA counts a resumed round's pace from it.
        entry = {
            "step": event["step"],
            "epoch": round(event.get("epoch", 0.0), 4),
            "loss": event["loss"],
            "time": round(event["time"], 3),
        }
        fields.update(epoch=event.get("epoch", 0.0), loss=event["loss"])
        if "rewards/margins" in event:
            entry.update(margin=event["rewards/margins"], accuracy=event.get("rewards/accuracies"))
            fields.update(
                reward_margin=event["rewards/margins"], reward_accuracy=event.get("rewards/accuracies")
            )
        while self.history and self.history[-1]["step"] >= entry["step"]:
            self.history.pop()  # re-read, or resumed from an earlier checkpoint: the newer steps replace these
        self.history.append(entry)
        return fields


def _register(run: TrainingRun, folder: Path) -> GuardCheckpoint:
    run.refresh_from_db(fields=["output_checkpoint"])
    if run.output_checkpoint is not None:  # registered before the worker died
        return run.output_checkpoint
    base = run.base_checkpoint
    # Asked as it was trained: the base's template (the QA ablation: the built-in QA one) and generation settings,
    # its inputs cut at the round's budget.
    qa = run.hyperparameters.get("prompt_variant") == "qa"
    with transaction.atomic():
        checkpoint = checkpoint_register(
            name=f"{run.stage}-run-{run.pk}",
            path=str(folder / "model"),
            base_model=(base.base_model or base.name) if base else "",
            prompt_version=QA_PROMPT_VERSION if qa else (base.prompt_version if base else PROMPT_VERSION),
            max_new_tokens=base.max_new_tokens if base else None,
            greedy=base.greedy if base else True,
            max_input_tokens=run.hyperparameters.get("max_length"),
        )
        TrainingRun.objects.filter(pk=run.pk).update(output_checkpoint=checkpoint)
    run.output_checkpoint = checkpoint
    return checkpoint


def _evaluate(run: TrainingRun, checkpoint: GuardCheckpoint) -> None:
    """Judge the test subsets with the new checkpoint and record the evaluation (a failure here is noted, the
    round still succeeded)."""
    hp = run.hyperparameters
    if hp.get("prompt_variant", "qta") != "qta" or hp.get("withhold_image"):
        # Guard jobs judge with the full QTA prompt and the image; an ablation checkpoint was trained without them.
        _set(
            run,
            evaluation_error="ablation round (QA-only prompt or image withheld): judge it with the same "
            "ablation, as bench/training_loop.py does; not evaluated automatically",
        )
        return
    subsets = test_subsets()
    if not subsets:
        _set(run, evaluation_error="no test subsets: import samples with split=test to evaluate")
        return
    ids = list(Sample.objects.filter(split=Split.TEST).exclude(subset="").values_list("pk", flat=True))
    job = guard_job_create(checkpoint=checkpoint, sample_ids=ids, evaluate_subsets=subsets, enqueue=False)
    guard_job_run(job_id=job.pk)
    job.refresh_from_db()
    evaluation = (
        Evaluation.objects.filter(source_kind=Evaluation.SourceKind.GUARD, source_name=checkpoint.name)
        .order_by("-created_at", "-pk")
        .first()
    )
    if job.status != GuardJob.Status.SUCCEEDED or evaluation is None:
        _set(run, evaluation_error=job.error.split("\n\n")[0] or "the evaluation did not finish")
        return
    _set(run, evaluation=evaluation)
