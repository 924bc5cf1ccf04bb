"""Generation runs: each selected variant answered by each generator (samples_per_variant times), every reply a
`Sample` with its provenance.

Same rules as the jury: HTTP generators run on the `jury` queue with `max_concurrency` requests in flight, local
ones on `gpu`; each call is retried with backoff on retryable errors (GUARDTRACE_JURY_ATTEMPTS); a task is claimed
by conditional update with a token and its result written only by its claim's holder, so a redelivered message or a
second driver never doubles a sample; claims older than GUARDTRACE_JURY_LEASE_S (a killed worker's) are taken over.
Replies already made for the same variant, generator, reply number and parameters are not asked again; failed ones
are.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from annotation.models import Sample
from annotation.services import content_hash
from common.errors import ApplicationError
from common.work import Driver, JobStatus, retry_policy
from generation.models import GenerationRun, GenerationTask, Generator, Variant
from qta.generators import OpenAIGenerator, Trace, TransformersGenerator

Status = GenerationTask.Status
MADE = (Status.DONE, Status.FLAGGED)


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
        run = GenerationRun.objects.create(split=split, subset=subset[:64], created_by=user,
                                           parameters={g.name: parameters(g) for g in generators})  # fmt: skip
        run.generators.set(generators)
        tasks = []
        for generator in generators:
            # Made before with these parameters, or waiting in an unfinished run: not asked again.
            taken = set(
                GenerationTask.objects.filter(generator=generator, variant_id__in=variant_ids)
                .filter(Q(status__in=MADE) | Q(run__status=JobStatus.RUNNING, status__in=[Status.PENDING, Status.CLAIMED]))
                .filter(**{f"run__parameters__{generator.name}": parameters(generator)})
                .values_list("variant_id", "sample_index")
            )  # fmt: skip
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
            transaction.on_commit(lambda: _enqueue(run, generators))
    return run


def _enqueue(run: GenerationRun, generators: list[Generator]) -> None:
    from generation.tasks import generation_drive_task

    for generator in generators:
        generation_drive_task.apply_async(args=[run.pk, generator.pk], queue=generator.queue)


def backend_for(generator: Generator) -> OpenAIGenerator | TransformersGenerator:
    if generator.backend == Generator.Backend.TRANSFORMERS:
        return TransformersGenerator(generator.model_name, max_tokens=generator.max_tokens,
                                     temperature=generator.temperature, name=generator.name)  # fmt: skip
    return OpenAIGenerator(generator.base_url, generator.model_name, api_key=generator.api_key(), timeout_s=generator.timeout_s,
                           max_tokens=generator.max_tokens, temperature=generator.temperature, retry=retry_policy(),
                           name=generator.name)  # fmt: skip


def generation_drive(run_id: int, generator_id: int) -> int:
    """Work the run's tasks for this generator until none is left; returns the samples made."""
    run = GenerationRun.objects.filter(pk=run_id).first()
    generator = Generator.objects.filter(pk=generator_id).first()
    if run is None or generator is None or run.finished:
        return 0
    token = uuid.uuid4().hex
    _release_stale(run, generator)
    try:
        backend = backend_for(generator)
    except Exception as exc:  # a missing key, a model that cannot load: every task of this generator fails
        GenerationTask.objects.filter(run=run, generator=generator, status=Status.PENDING).update(
            status=Status.FAILED, error=f"{type(exc).__name__}: {exc}", completed_at=timezone.now()
        )
        _finish_if_done(run)
        return 0
    made = _GenerationDriver(run, generator, backend, token).run()
    _finish_if_done(run)
    return made


class _GenerationDriver(Driver):
    """One generator's tasks in one run, `max_concurrency` calls in flight (one for a local model), a slot refilled
    as soon as it frees (never a batch waiting on its slowest reply)."""

    def __init__(self, run: GenerationRun, generator: Generator, backend, token: str) -> None:
        self.run_row, self.generator, self.backend, self.token = run, generator, backend, token
        self.workers = self.target = (
            max(1, generator.max_concurrency) if generator.backend == Generator.Backend.OPENAI else 1
        )
        self.refill_at = self.target - 1
        self.name = f"generator-{generator.name}"

    def claim(self, want: int) -> list[tuple[list[GenerationTask], tuple]]:
        tasks = _claim(self.run_row, self.generator, self.token, want)
        return [([task], (task.variant.text, _image_bytes(task.variant))) for task in tasks]

    def call(self, payload: tuple) -> list[Trace]:
        text, image = payload
        return [self.backend.generate(text, image)]

    def flush(self, done: list) -> int:
        with transaction.atomic():  # the replies that came back together, in one commit
            return sum(_record(self.run_row, self.generator, task, trace, self.token) for task, trace in done)

    def cancelled(self, items: list) -> set:
        if GenerationRun.objects.filter(pk=self.run_row.pk, status=JobStatus.RUNNING).exists():
            return set()
        return set(items)

    def more(self) -> bool:
        # Tasks another driver claimed and never finished (it died) are taken over once their claim is older than
        # the lease; a live driver finishes its own meanwhile.
        return _wait_for_others(self.run_row, self.generator, self.token)

    def release(self) -> None:
        GenerationTask.objects.filter(
            run=self.run_row, generator=self.generator, claim_token=self.token, status=Status.CLAIMED
        ).update(status=Status.PENDING, claim_token="")


def _release_stale(run: GenerationRun, generator: Generator) -> int:
    stale = timezone.now() - timedelta(seconds=settings.GUARDTRACE_JURY_LEASE_S)
    return GenerationTask.objects.filter(
        run=run, generator=generator, status=Status.CLAIMED, claimed_at__lt=stale
    ).update(status=Status.PENDING, claim_token="")


def _wait_for_others(run: GenerationRun, generator: Generator, token: str) -> bool:
    """Whether there is more to do after waiting out other drivers' claims (False: none are left)."""
    others = GenerationTask.objects.filter(run=run, generator=generator, status=Status.CLAIMED).exclude(
        claim_token=token
    )
    while others.exists():
        if _release_stale(run, generator):
            return True
        time.sleep(min(1.0, settings.GUARDTRACE_JURY_LEASE_S / 4))
    return GenerationTask.objects.filter(run=run, generator=generator, status=Status.PENDING).exists()


def resume_unfinished() -> int:
    """Queue the drivers of every unfinished run again (a worker starting after a crash calls it)."""
    queued = 0
    for run in GenerationRun.objects.filter(status=JobStatus.RUNNING):
        open_generators = list(
            Generator.objects.filter(
                tasks__run=run, tasks__status__in=[Status.PENDING, Status.CLAIMED]
            ).distinct()
        )
        if open_generators:
            _enqueue(run, open_generators)
            queued += 1
    return queued


def _claim(run: GenerationRun, generator: Generator, token: str, limit: int) -> list[GenerationTask]:
    ids = list(
        GenerationTask.objects.filter(
            run=run, generator=generator, status=Status.PENDING, run__status=JobStatus.RUNNING
        ).order_by("pk").values_list("pk", flat=True)[:limit]
    )  # fmt: skip
    if not ids:
        return []
    GenerationTask.objects.filter(pk__in=ids, status=Status.PENDING).update(
        status=Status.CLAIMED, claim_token=token, claimed_at=timezone.now()
    )
    claimed = GenerationTask.objects.filter(pk__in=ids, claim_token=token, status=Status.CLAIMED)
    tasks = list(claimed.select_related("variant__seed__seed_set", "variant__image"))
    # Another driver took them all between the two queries: look again (more may be pending).
    return tasks or _claim(run, generator, token, limit)


def _image_bytes(variant: Variant) -> bytes | None:
    if variant.image is None:
        return None
    with variant.image.file.open("rb") as handle:
        return handle.read()


def _record(run: GenerationRun, generator: Generator, task: GenerationTask, trace: Trace, token: str) -> int:
    """Write the task's outcome (and its sample) if this driver still holds its claim; 1 when a sample was made."""
    now = timezone.now()
    with transaction.atomic():
        sample = None
        if trace.status != "failed":
            sample = _sample(run, generator, task, trace)
        status = {"ok": Status.DONE, "flagged": Status.FLAGGED}.get(trace.status, Status.FAILED)
        written = GenerationTask.objects.filter(pk=task.pk, claim_token=token, status=Status.CLAIMED).update(
            status=status, sample=sample, usage=trace.usage, error=trace.error, attempts=trace.attempts,
            completed_at=now,
        )  # fmt: skip
        if not written:
            transaction.set_rollback(True)  # the claim was taken over: its new holder writes the result
            return 0
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


def _finish_if_done(run: GenerationRun) -> None:
    open_tasks = GenerationTask.objects.filter(run=run, status__in=[Status.PENDING, Status.CLAIMED])
    if not open_tasks.exists():
        GenerationRun.objects.filter(pk=run.pk, status=JobStatus.RUNNING).update(
            status=JobStatus.SUCCEEDED, finished_at=timezone.now()
        )


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
