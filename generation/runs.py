"""Generation runs: each selected variant answered by each generator (samples_per_variant times), every reply a
`Sample` with its provenance.

Same rules as the jury: HTTP generators run on the `jury` queue with `max_concurrency` requests in flight, local
ones on `gpu`; each call is retried with backoff on retryable errors (GUARDTRACE_JURY_ATTEMPTS). A generator's tasks,
in every running run, are driven by one process at a time: the holder of its lease (`common.models.Lease`, key
`generator:<id>`, renewed while it works, taken over once GUARDTRACE_JURY_LEASE_S have passed without renewal), so
its concurrency limit holds across workers and runs. A task is claimed by conditional update under the holder's
token and its result written only while that claim stands; whoever takes the lease next gives every other token's
claims back to pending (a killed worker's tasks are asked again once, and a late reply from a driver that lost its
lease is refused), so a redelivered message or a second driver never doubles a sample. Replies already made for the
same variant, generator, reply number and parameters are not asked again; failed ones are.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet
from django.utils import timezone

from annotation.models import Sample
from annotation.services import content_hash
from common.errors import ApplicationError
from common.models import lease_renew
from common.work import (
    DriveOutcome,
    Driver,
    JobStatus,
    drive_under_lease,
    drivers_requeue_orphaned,
    retry_policy,
)
from generation.models import GenerationRun, GenerationTask, Generator, Variant
from qta.generators import OpenAIGenerator, Trace, TransformersGenerator

log = logging.getLogger(__name__)
Status = GenerationTask.Status
MADE = (Status.DONE, Status.FLAGGED)
OPEN = (Status.PENDING, Status.CLAIMED)


class GenerationError(ApplicationError):
    """A run that cannot be made as asked; the message names the field."""


def parameters(generator: Generator) -> dict:
    return {"model": generator.model_name, "max_tokens": generator.max_tokens,
            "temperature": generator.temperature, "samples": generator.samples_per_variant}  # fmt: skip


def generation_run_create(
    *, variants, generators: list[Generator], split: str = "train", subset: str = "", user=None,
    enqueue: bool = True,
) -> GenerationRun:  # fmt: skip
    if not generators:
        raise GenerationError("generators: none chosen — configure generators in the admin first")
    if disabled := [g.name for g in generators if not g.enabled]:
        raise GenerationError(f"generators: {', '.join(disabled)} is disabled")
    if split not in ("train", "test"):
        raise GenerationError(f"split: {split!r} is not train or test")
    variant_ids = [variant.pk for variant in variants]
    if not variant_ids:
        raise GenerationError("variants: none selected — expand seed queries first")
    with transaction.atomic():
        run = GenerationRun.objects.create(split=split, subset=subset[:64], created_by=user, started_at=timezone.now(),
                                           parameters={g.name: parameters(g) for g in generators})  # fmt: skip
        run.generators.set(generators)
        tasks = []
        for generator in generators:
            taken = _taken(generator, variant_ids, parameters(generator))
            tasks += [
                GenerationTask(run=run, variant_id=vid, generator=generator, sample_index=index)
                for vid in variant_ids
                for index in range(generator.samples_per_variant)
                if (vid, index) not in taken
            ]
        GenerationTask.objects.bulk_create(tasks, batch_size=1000)
        run.total = len(tasks)
        if not tasks:
            run.status, run.finished_at = JobStatus.SUCCEEDED, timezone.now()
        run.save(update_fields=["total", "status", "finished_at"])
        if enqueue and tasks:
            transaction.on_commit(lambda: _enqueue(generators))
    return run


def _taken(
    generator: Generator,
    variant_ids: Iterable[int] | QuerySet,
    asked: dict,
    exclude_run: GenerationRun | None = None,
) -> set[tuple[int, int]]:
    """The (variant, reply number) pairs the generator made before with the parameters `asked`, or that wait in a
    running run: not asked again."""
    tasks = GenerationTask.objects.filter(generator=generator, variant_id__in=variant_ids).filter(
        Q(status__in=MADE) | Q(run__status=JobStatus.RUNNING, status__in=OPEN)
    )
    if exclude_run is not None:
        tasks = tasks.exclude(run=exclude_run)
    tasks = tasks.filter(**{f"run__parameters__{generator.name}": asked})
    return set(tasks.values_list("variant_id", "sample_index"))


def _enqueue(generators: list[Generator]) -> None:
    from generation.tasks import generation_drive_task

    for generator in generators:
        generation_drive_task.apply_async(args=[generator.pk], queue=generator.queue)


def backend_for(generator: Generator) -> OpenAIGenerator | TransformersGenerator:
    if generator.backend == Generator.Backend.TRANSFORMERS:
        return TransformersGenerator(generator.model_name, max_tokens=generator.max_tokens,
                                     temperature=generator.temperature, name=generator.name)  # fmt: skip
    return OpenAIGenerator(generator.base_url, generator.model_name, api_key=generator.api_key(), timeout_s=generator.timeout_s,
                           max_tokens=generator.max_tokens, temperature=generator.temperature, retry=retry_policy(),
                           name=generator.name, max_concurrency=generator.max_concurrency)  # fmt: skip


# -- cancelling and resuming ----------------------------------------------------------------------------------------


def generation_run_cancel(*, run: GenerationRun) -> bool:
    """Stop asking the run's replies; calls already in flight finish and their samples are kept."""
    return GenerationRun.cancel(run.pk)


def generation_run_resume(*, run: GenerationRun) -> bool:
    """Ask a cancelled run's remaining replies, or re-queue the drivers of a running one (its worker was lost).
    Replies made since by another run, or waiting in one, are left to it and leave this run."""
    with transaction.atomic():
        if (
            not GenerationRun.objects.filter(pk=run.pk)
            .exclude(status=JobStatus.SUCCEEDED)
            .update(status=JobStatus.RUNNING, finished_at=None)
        ):
            return False
        run.refresh_from_db()
        for generator in run.generators.all():
            asked = run.parameters.get(generator.name, parameters(generator))
            taken = _taken(generator, run.tasks.values("variant_id"), asked, exclude_run=run)
            pending = run.tasks.filter(generator=generator, status=Status.PENDING)
            gone = [
                pk
                for pk, *reply in pending.values_list("pk", "variant_id", "sample_index")
                if tuple(reply) in taken
            ]
            if gone:
                GenerationTask.objects.filter(pk__in=gone, status=Status.PENDING).delete()
                GenerationRun.objects.filter(pk=run.pk).update(total=F("total") - len(gone))
        generators = list(Generator.objects.filter(tasks__run=run, tasks__status__in=OPEN).distinct())
        transaction.on_commit(lambda: _enqueue(generators))
        _finish_runs([run.pk])
    return True


def resume_unfinished() -> int:
    """Queue a driver for every generator with open tasks in running runs (a worker starting up calls this)."""
    generators = list(
        Generator.objects.filter(tasks__status__in=OPEN, tasks__run__status=JobStatus.RUNNING).distinct()
    )
    _enqueue(generators)
    return len(generators)


def requeue_orphaned() -> list[int]:
    """Queue a driver for each generator whose driver died with its worker, leaving open work in a running run."""
    return drivers_requeue_orphaned(
        "generator:",
        has_work=lambda pk: _open_tasks(pk).filter(generator__enabled=True).exists(),
        enqueue=lambda pks: _enqueue(list(Generator.objects.filter(pk__in=pks))),
    )


# -- driving a generator's work -------------------------------------------------------------------------------------


def _lease_key(generator_id: int) -> str:
    # One lease per generator (not per run): its max_concurrency then holds across workers and across runs.
    return f"generator:{generator_id}"


def lease_s() -> float:
    # Generators are driven like jurors: the same lease, renewed a third of the way through.
    return settings.GUARDTRACE_JURY_LEASE_S


def generation_drive(generator_id: int) -> DriveOutcome:
    """Work the generator's open tasks in every running run until none is left (or the lease is lost)."""
    generator = Generator.objects.filter(pk=generator_id).first()
    if generator is None:  # deleted since the message was sent: nothing to do
        return DriveOutcome()
    return drive_under_lease(
        _lease_key(generator.pk),
        lease_s(),
        drive=lambda token: _drive_holding_lease(generator, token),
        more=lambda: _open_tasks(generator).exists(),
    )


def _drive_holding_lease(generator: Generator, token: str) -> int:
    if taken := _take_over(generator, token):
        log.warning(
            "generator %s: %d task(s) of a driver whose lease ran out asked again", generator.name, taken
        )
    try:
        backend = backend_for(generator)
    except Exception as exc:  # a missing key, a model that cannot load: every task of this generator fails
        pending = _open_tasks(generator).filter(status=Status.PENDING)
        run_ids = set(pending.values_list("run_id", flat=True))
        pending.update(
            status=Status.FAILED, error=f"{type(exc).__name__}: {exc}", completed_at=timezone.now()
        )
        _finish_runs(run_ids)
        return 0
    # Loading a local model can outlast the lease: carry on only if no one took over meanwhile.
    if not lease_renew(_lease_key(generator.pk), token, lease_s()):
        return 0
    return _GenerationDriver(generator, backend, token).run()


def _open_tasks(generator: Generator | int) -> QuerySet[GenerationTask]:
    return GenerationTask.objects.filter(generator=generator, status__in=OPEN, run__status=JobStatus.RUNNING)


def _take_over(generator: Generator, token: str) -> int:
    """Give back to pending the generator's tasks claimed under any other token. Called by the lease's holder, the
    only driver that may hold claims: another token's claims are a dead driver's, or one's that lost its lease
    (its late results are refused, since they are written only under their claim)."""
    return (
        GenerationTask.objects.filter(generator=generator, status=Status.CLAIMED)
        .exclude(claim_token=token)
        .update(status=Status.PENDING, claim_token="")
    )


class _GenerationDriver(Driver):
    """One generator's tasks in every running run, `max_concurrency` calls in flight (one for a local model), a slot
    refilled as soon as it frees (never a batch waiting on its slowest reply), under the generator's lease. A served
    generator's calls are coroutines on the event loop, with as many tasks again claimed and waiting for a slot."""

    def __init__(self, generator: Generator, backend, token: str) -> None:
        self.generator, self.backend, self.token = generator, backend, token
        self.asynchronous = isinstance(backend, OpenAIGenerator)
        self.workers = max(1, generator.max_concurrency) if self.asynchronous else 1
        self.target = 2 * self.workers if self.asynchronous else 1
        self.refill_at = self.workers if self.asynchronous else 0
        self.renew_every_s = lease_s() / 3
        self.name = f"generator-{generator.name}"

    def renew(self) -> bool:
        return lease_renew(_lease_key(self.generator.pk), self.token, lease_s())

    def claim(self, want: int) -> list[tuple[list[GenerationTask], tuple | Trace]]:
        return [([task], _task_input(task)) for task in _claim(self.generator, self.token, want)]

    def call(self, payload: tuple | Trace) -> list[Trace]:
        if isinstance(payload, Trace):  # its input could not be built: the failure is the task's answer
            return [payload]
        text, image = payload
        return [self.backend.generate(text, image)]

    async def acall(self, payload: tuple | Trace) -> list[Trace]:
        if isinstance(payload, Trace):
            return [payload]
        text, image = payload
        return [await self.backend.agenerate(text, image)]

    def flush(self, done: list) -> int:
        with transaction.atomic():  # the replies that came back together, in one commit
            made, answered = 0, Counter[int]()
            for task, trace in done:
                if (sample_made := _record(self.generator, task, trace, self.token)) is not None:
                    made += sample_made
                    answered[task.run_id] += 1
            now = timezone.now()
            for run_id, n in answered.items():
                GenerationRun.objects.filter(pk=run_id).update(done=F("done") + n, heartbeat_at=now)
            _finish_runs({task.run_id for task, _ in done})
        return made

    def cancelled(self, items: list) -> set:
        stopped = set(
            GenerationRun.objects.filter(pk__in={task.run_id for task in items})
            .exclude(status=JobStatus.RUNNING)
            .values_list("pk", flat=True)
        )
        return {task for task in items if task.run_id in stopped}

    def dropped(self, items: list) -> None:
        self._give_back(GenerationTask.objects.filter(pk__in=[task.pk for task in items]))

    def more(self) -> bool:
        # Claims under another token while this driver holds the lease belong to one that lost it: take them over
        # (after making sure the lease is still this driver's, or they might be its new holder's).
        if not self.renew():
            return False
        return bool(_take_over(self.generator, self.token)) or _open_tasks(self.generator).exists()

    def release(self) -> None:
        self._give_back(GenerationTask.objects.filter(generator=self.generator))

    def _give_back(self, tasks: QuerySet[GenerationTask]) -> None:
        tasks.filter(claim_token=self.token, status=Status.CLAIMED).update(
            status=Status.PENDING, claim_token=""
        )


def _claim(generator: Generator, token: str, limit: int) -> list[GenerationTask]:
    ids = list(
        GenerationTask.objects.filter(
            generator=generator, status=Status.PENDING, run__status=JobStatus.RUNNING
        )
        .order_by("run_id", "pk")
        .values_list("pk", flat=True)[:limit]
    )
    if not ids:
        return []
    # claimed_at is for people reading the table; the lease, not its age, says whether the claim's driver lives.
    GenerationTask.objects.filter(pk__in=ids, status=Status.PENDING).update(
        status=Status.CLAIMED, claim_token=token, claimed_at=timezone.now()
    )
    claimed = GenerationTask.objects.filter(pk__in=ids, claim_token=token, status=Status.CLAIMED)
    tasks = list(claimed.select_related("run", "variant__seed__seed_set", "variant__image"))
    # Another driver took them all between the two queries: look again (more may be pending).
    return tasks or _claim(generator, token, limit)


def _task_input(task: GenerationTask) -> tuple[str, bytes | None] | Trace:
    """What the generator is asked for the task, or — when its variant's image cannot be read — a failed trace, so
    this task alone fails (as the jury fails one unreadable sample) and the driver goes on with the others."""
    variant = task.variant
    try:
        return variant.text, _image_bytes(variant)
    except Exception as exc:  # an image file missing from storage, or unreadable
        image = variant.image.file.name if variant.image else ""
        error = f"variant {variant.pk}: image {image} could not be read: {type(exc).__name__}: {exc}"
        log.warning("generator task %s: %s", task.pk, error)
        return Trace(status="failed", error=error)


def _image_bytes(variant: Variant) -> bytes | None:
    if variant.image is None:
        return None
    with variant.image.file.open("rb") as handle:
        return handle.read()


def _record(generator: Generator, task: GenerationTask, trace: Trace, token: str) -> int | None:
    """Write the task's outcome (and its sample) if this driver still holds its claim: 1 when a sample was made, 0
    when the call failed, None when the claim was taken over (nothing written)."""
    now = timezone.now()
    with transaction.atomic():
        sample = None
        if trace.status != "failed":
            sample = _sample(task.run, generator, task, trace)
        status = {"ok": Status.DONE, "flagged": Status.FLAGGED}.get(trace.status, Status.FAILED)
        written = GenerationTask.objects.filter(pk=task.pk, claim_token=token, status=Status.CLAIMED).update(
            status=status, sample=sample, usage=trace.usage, error=trace.error, attempts=trace.attempts,
            completed_at=now,
        )  # fmt: skip
        if not written:
            transaction.set_rollback(True)  # the claim was taken over: its new holder writes the result
            return None
    return int(sample is not None)


def _sample(run: GenerationRun, generator: Generator, task: GenerationTask, trace: Trace) -> Sample:
    variant = task.variant
    seed = variant.seed
    image_sha = variant.image.sha256 if variant.image else None
    digest = content_hash(
        question=variant.text, thinking=trace.thinking, answer=trace.answer, image_sha256=image_sha
    )
    provenance = {
        "seed": {"id": seed.pk, "set": seed.seed_set.name, "external_id": seed.external_id, "text": seed.text,
                 "source": seed.source},
        "variant": {"id": variant.pk, "kind": variant.kind, "derivation": variant.derivation},
        "generator": {"name": generator.name, "backend": generator.backend, **run.parameters.get(generator.name, {})},
        "run": run.pk, "reply": task.sample_index, "reasoning": trace.source, "usage": trace.usage,
        "finish_reason": trace.finish_reason,
    }  # fmt: skip
    sample, _ = Sample.objects.get_or_create(
        content_hash=digest,
        defaults={
            "question": variant.text, "thinking": trace.thinking, "answer": trace.answer, "image": variant.image,
            "split": run.split, "subset": run.subset or seed.seed_set.name[:64], "category": seed.category,
            "input_variant": variant.kind, "source_dataset": seed.source[:100], "generator_model": generator.name,
            "external_id": f"gen-{run.pk}-{task.pk}", "provenance": provenance,
        },
    )  # fmt: skip
    return sample


def _finish_runs(run_ids: Iterable[int]) -> None:
    """The running runs among `run_ids` with no task left to ask have succeeded."""
    open_tasks = GenerationTask.objects.filter(run=OuterRef("pk"), status__in=OPEN)
    GenerationRun.objects.filter(pk__in=list(run_ids), status=JobStatus.RUNNING).exclude(
        Exists(open_tasks)
    ).update(status=JobStatus.SUCCEEDED, finished_at=timezone.now())


def runs_progress(run_ids: list[int]) -> dict[int, dict[str, int]]:
    """Task counts by status for each run, in one query."""
    counts = {pk: dict.fromkeys(Status.values, 0) for pk in run_ids}
    rows = (
        GenerationTask.objects.filter(run_id__in=run_ids).values("run_id", "status").annotate(n=Count("id"))
    )
    for row in rows:
        counts[row["run_id"]][row["status"]] = row["n"]
    return counts


def run_progress(run: GenerationRun) -> dict[str, int]:
    return runs_progress([run.pk])[run.pk]
