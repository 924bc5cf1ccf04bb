"""Guard checkpoints, guard jobs (judging samples into labels), evaluations and the audit call."""

from __future__ import annotations

import base64
import logging
import threading
import traceback
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Sequence
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from annotation.models import Label, LabelOrigin, Sample, Split
from annotation.strata import jury_prompt_version, majority
from common.endpoints import EndpointTarget
from common.errors import ApplicationError, MissingApiKey
from common.models import api_key, validate_base_url
from common.work import Driver, connection_recover, requeue_abandoned
from guardmodel.models import Evaluation, GuardCheckpoint, GuardJob, replica_urls, validate_replicas
from guardmodel.prompts import TemplateError, template_for
from qta import calibration, metrics
from qta.engine import AuditInput, EngineOptions, Guard, OpenAIGuard, TransformersGuard, Verdict
from qta.loading import CheckpointError, check_checkpoint_dir, is_local
from qta.protocol import PROMPT_VERSION, RELEASE_GENERATION, format_judgment

log = logging.getLogger(__name__)
CHUNK = 64  # samples per commit: a killed worker loses at most this much work
ENDPOINT_BUDGET = "an endpoint's input budget is its server's (vLLM: --max-model-len); leave it empty"


class EvaluationError(ApplicationError):
    pass


# -- checkpoints --------------------------------------------------------------------------------------------------


def checkpoint_register(
    *,
    name: str,
    path: str = "",
    endpoint: str = "",
    replicas: Sequence[str] = (),
    base_model: str = "",
    served_model: str = "",
    api_key_env: str = "",
    activate: bool = False,
    prompt_version: str = PROMPT_VERSION,
    max_new_tokens: int | None = None,
    max_input_tokens: int | None = None,
    greedy: bool = True,
) -> GuardCheckpoint:
    """Register a checkpoint; a local directory is checked first so a bad path fails here, naming the missing file.

    `replicas` are more base URLs serving the endpoint's model (vLLM replicas; a list, or one text as the admin's
    field takes them), called with it as one pool.
    `prompt_version` names the template it is asked with (built-in or stored); the generation settings default to
    the app's (GUARDTRACE_GUARD_MAX_NEW_TOKENS, the model's context)."""
    if not path and not endpoint:
        raise CheckpointError("a checkpoint needs a path or an endpoint")
    try:
        template_for(prompt_version)
    except TemplateError as exc:
        raise CheckpointError(str(exc)) from None
    if endpoint and max_input_tokens:
        raise CheckpointError(f"max_input_tokens: {ENDPOINT_BUDGET}")
    for field_name, value in (("max_new_tokens", max_new_tokens), ("max_input_tokens", max_input_tokens)):
        if value is not None and not 1 <= value <= 1_000_000:
            raise CheckpointError(f"{field_name}: {value} is not between 1 and 1,000,000")
    if endpoint:
        try:
            validate_base_url(endpoint)
        except ValidationError as exc:
            raise CheckpointError(f"endpoint: {exc.messages[0]}") from None
    replicas = replica_urls(replicas) if isinstance(replicas, str) else list(replicas)
    if replicas and not endpoint:
        raise CheckpointError("replicas: a checkpoint with replicas needs an endpoint (the first of them)")
    try:
        validate_replicas("\n".join(replicas), endpoint)
    except ValidationError as exc:
        raise CheckpointError(f"replicas: {exc.messages[0]}") from None
    if path and is_local(path):
        path = str(Path(path).expanduser().resolve())
        check_checkpoint_dir(Path(path))
    with transaction.atomic():
        checkpoint = GuardCheckpoint.objects.create(
            name=name, path=path, endpoint=endpoint, replicas="\n".join(replicas), base_model=base_model,
            served_model=served_model, api_key_env=api_key_env, prompt_version=prompt_version,
            max_new_tokens=max_new_tokens, max_input_tokens=max_input_tokens, greedy=greedy,
        )  # fmt: skip
        if activate:
            checkpoint_activate(checkpoint)
    return checkpoint


def release_settings(*, endpoint: bool) -> dict:
    """The GuardTrace-VL release's generation settings for a checkpoint; a served one keeps its server's input
    budget (vLLM: --max-model-len)."""
    preset = dict(RELEASE_GENERATION)
    if endpoint:
        del preset["max_input_tokens"]
    return preset


def checkpoint_activate(checkpoint: GuardCheckpoint) -> None:
    with transaction.atomic():
        GuardCheckpoint.objects.filter(is_active=True).exclude(pk=checkpoint.pk).update(is_active=False)
        GuardCheckpoint.objects.filter(pk=checkpoint.pk).update(is_active=True)
    checkpoint.is_active = True


def engine_options(checkpoint: GuardCheckpoint | None = None) -> EngineOptions:
    """The engine's settings: the app's, overridden by a checkpoint's template and generation settings."""
    options = EngineOptions(
        max_new_tokens=settings.GUARDTRACE_GUARD_MAX_NEW_TOKENS,
        batch_size=settings.GUARDTRACE_GUARD_BATCH_SIZE,
        max_pixels=settings.GUARDTRACE_GUARD_MAX_PIXELS,
        max_image_pixels=settings.GUARDTRACE_MAX_IMAGE_PIXELS,
        device=settings.GUARDTRACE_GUARD_DEVICE,
        dtype=settings.GUARDTRACE_GUARD_DTYPE,
    )
    if checkpoint is not None:
        options.template = template_for(checkpoint.prompt_version)
        options.max_new_tokens = checkpoint.max_new_tokens or options.max_new_tokens
        options.max_input_tokens = checkpoint.max_input_tokens or options.max_input_tokens
        options.greedy = checkpoint.greedy
    return options


def served_model_name(checkpoint: GuardCheckpoint) -> str:
    """The model name an endpoint checkpoint is asked for: its served model, else its path, else its name."""
    return checkpoint.served_model or checkpoint.path or checkpoint.name


def checkpoint_endpoint_target(checkpoint: GuardCheckpoint) -> EndpointTarget:
    """What "Test connection" checks: the endpoint when it has one (as `backend_for` calls it), else the path."""
    who = f"checkpoint {checkpoint.name}"
    if checkpoint.endpoint:
        return EndpointTarget(
            who,
            base_url=checkpoint.endpoint,
            model=served_model_name(checkpoint),
            api_key_env=checkpoint.api_key_env,
        )
    return EndpointTarget(who, path=checkpoint.path)


_backends: dict[tuple, Guard] = {}
_backends_lock = threading.Lock()


def backend_for(checkpoint: GuardCheckpoint) -> Guard:
    """The checkpoint's backend, kept loaded in this process (one local model at a time: memory)."""
    key = (
        checkpoint.pk, checkpoint.path, checkpoint.endpoint, checkpoint.served_model, checkpoint.prompt_version,
        checkpoint.max_new_tokens, checkpoint.max_input_tokens, checkpoint.greedy, checkpoint.replicas,
    )  # fmt: skip
    with _backends_lock:
        if key in _backends:
            return _backends[key]
        options = engine_options(checkpoint)
        if checkpoint.endpoint:
            try:
                secret = api_key(checkpoint.api_key_env, who=f"checkpoint {checkpoint.name}")
            except MissingApiKey as exc:
                raise CheckpointError(str(exc)) from None  # the server's set-up, not the caller's input
            first, *replicas = checkpoint.base_urls
            backend: Guard = OpenAIGuard(
                first,
                served_model_name(checkpoint),
                replicas=replicas,
                name=checkpoint.name,
                api_key=secret,
                max_concurrency=settings.GUARDTRACE_GUARD_ENDPOINT_CONCURRENCY,
                max_tokens=options.max_new_tokens,
                template=options.template,
                greedy=options.greedy,
                scores=options.scores,
                top_logprobs=settings.GUARDTRACE_GUARD_TOP_LOGPROBS,
            )
        else:
            for old in [k for k in _backends if not k[2]]:
                del _backends[old]
            backend = TransformersGuard(checkpoint.path, options, name=checkpoint.name)
        _backends[key] = backend
        return backend


def sample_input(sample: Sample) -> AuditInput:
    image = None
    if sample.image_id:
        with sample.image.file.open("rb") as handle:  # type: ignore[union-attr]
            image = handle.read()
    return AuditInput(question=sample.question, thinking=sample.thinking, answer=sample.answer, image=image)


def verdict_label(verdict: Verdict, *, sample_id: int, kind: str, name: str, prompt_version: str) -> Label:
    return Label(
        sample_id=sample_id,
        source_kind=kind,
        source_name=name,
        prompt_version=prompt_version,
        analysis=verdict.analysis,
        judgment=verdict.judgment if verdict.status == "valid" else None,
        raw_output=verdict.raw_output,
        status=verdict.status,
        error=verdict.error,
        meta=verdict.meta(),
        latency_ms=verdict.latency_ms,
        created_at=timezone.now(),
    )


# -- guard jobs ---------------------------------------------------------------------------------------------------


def test_subsets() -> list[str]:
    # order_by() first: Sample's default ordering by id would make every row distinct.
    return list(
        Sample.objects.filter(split=Split.TEST)
        .exclude(subset="")
        .order_by("subset")
        .values_list("subset", flat=True)
        .distinct()
    )


def guard_job_create(
    *,
    checkpoint: GuardCheckpoint,
    sample_ids: Iterable[int],
    user=None,
    evaluate_subsets: list[str] | None = None,
    enqueue: bool = True,
    locate: bool = False,
) -> GuardJob:
    """A job over these samples, queued on the gpu worker once committed (enqueue=False: the caller runs it). With
    `locate`, a local checkpoint also scores each reasoning step and keeps where the harm comes in on its labels."""
    ids = sorted(set(sample_ids))
    job = GuardJob.objects.create(
        checkpoint=checkpoint,
        prompt_version=checkpoint.prompt_version,
        sample_ids=ids,
        total=len(ids),
        evaluate_subsets=evaluate_subsets or [],
        created_by=user,
        locate=locate,
    )
    if enqueue:
        _enqueue(job)
    return job


def _enqueue(job: GuardJob) -> None:
    from guardmodel.tasks import guard_job_run_task

    transaction.on_commit(lambda: guard_job_run_task.delay(job.pk))


def guard_job_resume(job: GuardJob) -> bool:
    """Queue a failed, cancelled or stuck job again; what it already judged is skipped."""
    updated = (
        GuardJob.objects.filter(pk=job.pk)
        .exclude(status=GuardJob.Status.SUCCEEDED)
        .update(status=GuardJob.Status.PENDING, error="", finished_at=None)
    )
    if updated:
        _enqueue(job)
    return bool(updated)


def guard_jobs_resume(*, host: str | None = None) -> list[int]:
    """Queue again the running jobs whose worker died on this host, and the pending ones; what they judged is
    skipped. A worker that died on another host is taken over when its message is redelivered. Called when a worker
    starts; returns the jobs queued."""
    from guardmodel.tasks import guard_job_run_task

    return requeue_abandoned(GuardJob, enqueue=guard_job_run_task.delay, host=host)


def guard_job_cancel(job: GuardJob) -> bool:
    """Stops a running job after its current chunk; a pending one never starts."""
    return GuardJob.cancel(job.pk)


def _judged_ids(job: GuardJob, ids: list[int]) -> set[int]:
    return set(
        Label.objects.filter(
            sample_id__in=ids,
            source_kind=Label.SourceKind.GUARD,
            source_name=job.checkpoint.name,
            prompt_version=job.prompt_version,
        ).values_list("sample_id", flat=True)
    )


def guard_job_run(*, job_id: int, redelivered: bool = False) -> bool:
    """Claim the job and judge its samples chunk by chunk, each chunk's labels committed at once.

    A duplicated message finds the job claimed and does nothing; a redelivered one (the worker died) takes it over;
    either way the unique constraint on labels keeps one label per sample × checkpoint × prompt version.
    """
    if not GuardJob.take(job_id, also_running=redelivered):
        return False
    job = GuardJob.objects.select_related("checkpoint").get(pk=job_id)
    try:
        # Asked as the job was created, even if the checkpoint's template changed since: the labels carry the job's
        # version, so they must have been asked with it.
        job.checkpoint.prompt_version = job.prompt_version
        backend = backend_for(job.checkpoint)
        ids = list(job.sample_ids)
        done_before = _judged_ids(job, ids)
        todo = [i for i in ids if i not in done_before]
        GuardJob.objects.filter(pk=job.pk).update(skipped=len(done_before), done=0, invalid=0, failed=0)
        driver = _GuardJobDriver(job, backend, todo)
        driver.run()
        if driver.stopped:  # cancelled, or taken over
            return True
        if job.evaluate_subsets:
            evaluation = evaluation_run(
                source_kind=Evaluation.SourceKind.GUARD, source_name=job.checkpoint.name,
                subsets=job.evaluate_subsets, user=job.created_by, prompt_version=job.prompt_version,
            )  # fmt: skip
            GuardJob.objects.filter(pk=job.pk).update(evaluation=evaluation)
    except Exception as exc:
        log.exception("guard job %s failed", job_id)
        connection_recover()  # a dropped database connection would fail the write that records the failure too
        GuardJob.end(
            job.pk, GuardJob.Status.FAILED, error=f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc()}"
        )
        return True
    GuardJob.end(job.pk, GuardJob.Status.SUCCEEDED)
    return True


class _GuardJobDriver(Driver):
    """A job's samples through the work engine: a served guard's calls are coroutines on the event loop, up to its
    concurrency in flight and refilled as each returns; a local model judges a chunk at a time on a thread. Labels
    are written every CHUNK results (a killed worker loses at most that much work); the job's heartbeat is its
    lease, and a cancelled job stops at the next one."""

    flush_every = CHUNK
    renew_every_s = 1.0

    def __init__(self, job: GuardJob, backend: Guard, todo: list[int]) -> None:
        self.job, self.backend, self.todo = job, backend, deque(todo)
        self.asynchronous = isinstance(backend, OpenAIGuard)
        self.unit = 1 if self.asynchronous else CHUNK
        # A served guard's concurrency is over all its replicas (GUARDTRACE_GUARD_ENDPOINT_CONCURRENCY each).
        self.workers = backend.max_concurrency if isinstance(backend, OpenAIGuard) else 1
        self.target = 2 * self.workers * self.unit
        self.refill_at = self.workers * self.unit
        self.name = f"guard-job-{job.pk}"
        self.stopped = False

    def renew(self) -> bool:
        self.stopped = not GuardJob.beat(self.job.pk)
        return not self.stopped

    def claim(self, want: int) -> list[tuple[list[int], list]]:
        ids = [self.todo.popleft() for _ in range(min(want, len(self.todo)))]
        inputs = read_inputs(ids)
        return [(ids[i : i + self.unit], inputs[i : i + self.unit]) for i in range(0, len(ids), self.unit)]

    def call(self, payload: list) -> list[Verdict]:
        verdicts = judge_readable(self.backend, payload)
        if self.job.locate and isinstance(self.backend, TransformersGuard):
            for item, verdict in zip(payload, verdicts, strict=True):
                if isinstance(item, AuditInput) and verdict.status != "failed":
                    verdict.located = self.backend.prefix_risk(item, locate_threshold(self.job.checkpoint))
        return verdicts

    async def acall(self, payload: list) -> list[Verdict]:
        verdicts = await ajudge_readable(self.backend, payload)
        if self.job.locate and isinstance(self.backend, OpenAIGuard):
            for item, verdict in zip(payload, verdicts, strict=True):
                if isinstance(item, AuditInput) and verdict.status != "failed":
                    verdict.located = await self.backend.aprefix_risk(
                        item, locate_threshold(self.job.checkpoint)
                    )
        return verdicts

    def flush(self, done: list) -> int:
        job = self.job
        labels = [
            verdict_label(verdict, sample_id=pk, kind=Label.SourceKind.GUARD, name=job.checkpoint.name,
                          prompt_version=job.prompt_version)
            for pk, verdict in done
        ]  # fmt: skip
        counts = Counter(verdict.status for _, verdict in done)
        with transaction.atomic():
            if not GuardJob.beat(
                job.pk, done=F("done") + len(labels), invalid=F("invalid") + counts["invalid"],
                failed=F("failed") + counts["failed"],
            ):  # fmt: skip
                self.stopped = True
                transaction.set_rollback(True)
                return 0
            Label.objects.bulk_create(labels, ignore_conflicts=True)
        return len(labels)

    def more(self) -> bool:
        return bool(self.todo) and not self.stopped


def read_inputs(ids: list[int]) -> list[AuditInput | Exception]:
    """Each sample's guard input, in order; a sample whose image file is missing from storage gives its exception,
    so that sample alone fails."""
    samples = Sample.objects.select_related("image").in_bulk(ids)
    inputs: list[AuditInput | Exception] = []
    for pk in ids:
        try:
            inputs.append(sample_input(samples[pk]))
        except Exception as exc:
            inputs.append(exc)
    return inputs


def judge_readable(backend, inputs: list) -> list[Verdict]:
    """One unit of work on a pool thread (a local model): a verdict per input, never raising, so one bad sample or
    call never stops a driver."""
    good = [x for x in inputs if not isinstance(x, Exception)]
    try:
        results = backend.judge(good) if good else []
    except Exception as exc:
        log.exception("%s: a unit of work failed", backend.name)
        results = [Verdict(status="failed", error=f"{type(exc).__name__}: {exc}") for _ in good]
    return with_unreadable_failed(inputs, results)


async def ajudge_readable(backend, inputs: list) -> list[Verdict]:
    """The same on the event loop (a served model)."""
    good = [x for x in inputs if not isinstance(x, Exception)]
    try:
        results = await backend.ajudge(good) if good else []
    except Exception as exc:
        log.exception("%s: a unit of work failed", backend.name)
        results = [Verdict(status="failed", error=f"{type(exc).__name__}: {exc}") for _ in good]
    return with_unreadable_failed(inputs, results)


def with_unreadable_failed(inputs: list, results: list[Verdict]) -> list[Verdict]:
    """One verdict per input: the guard's for the samples that could be read, a failed one for the others."""
    answers = iter(results)
    return [
        Verdict(status="failed", error=f"sample could not be read: {type(x).__name__}: {x}", attempts=0)
        if isinstance(x, Exception)
        else next(answers)
        for x in inputs
    ]


# -- evaluation ---------------------------------------------------------------------------------------------------

TRUTHS = ("imported", "expert", "final")
# Model-written labels belong to a prompt version; imported and expert labels do not.
VERSIONED_SOURCES = ("guard", "juror", "jury", "oracle")


def _truth(sample_ids: list[int], truth: str) -> dict[int, float]:
    if truth == "final":
        return dict(
            Sample.objects.filter(pk__in=sample_ids, final_label__isnull=False).values_list(  # type: ignore[arg-type]
                "pk", "final_label"
            )
        )
    kind = Label.SourceKind.IMPORTED if truth == "imported" else Label.SourceKind.EXPERT
    grouped: dict[int, list[float]] = defaultdict(list)
    for sample_id, judgment in Label.objects.filter(
        sample_id__in=sample_ids, source_kind=kind, status=Label.Status.VALID
    ).values_list("sample_id", "judgment"):
        grouped[sample_id].append(judgment)  # type: ignore[arg-type]
    return {sid: m for sid, values in grouped.items() if (m := majority(values)) is not None}


def _predictions(sample_ids: list[int], kind: str, name: str, prompt_version: str) -> dict[int, float | None]:
    """sample id → judgment (None when the source's label is invalid or failed); absent when it has no label."""
    if kind == Evaluation.SourceKind.JURY:
        votes: dict[int, list[float | None]] = defaultdict(list)
        for sample_id, judgment in Label.objects.filter(
            sample_id__in=sample_ids, source_kind=Label.SourceKind.JUROR, prompt_version=prompt_version
        ).values_list("sample_id", "judgment"):
            votes[sample_id].append(judgment)
        # The jury's answer is the strict majority of its votes (3:0 or 2:1); a 1:1:1 split has none.
        return {sid: majority([v for v in vs if v is not None]) for sid, vs in votes.items()}
    labels = Label.objects.filter(sample_id__in=sample_ids, source_kind=kind)
    if name:
        labels = labels.filter(source_name=name)
    if kind in VERSIONED_SOURCES:
        labels = labels.filter(prompt_version=prompt_version)
    grouped: dict[int, list[float | None]] = defaultdict(list)
    for sample_id, judgment in labels.values_list("sample_id", "judgment"):
        grouped[sample_id].append(judgment)
    return {sid: majority([v for v in vs if v is not None]) for sid, vs in grouped.items()}


def _risk_scores(sample_ids: list[int], kind: str, name: str, prompt_version: str) -> dict[int, dict]:
    """sample id → the risk scores its label carries (meta.scores), for sources that give them."""
    if kind == Evaluation.SourceKind.JURY or not name:
        return {}
    labels = Label.objects.filter(
        sample_id__in=sample_ids, source_kind=kind, source_name=name, meta__has_key="scores"
    )
    if kind in VERSIONED_SOURCES:
        labels = labels.filter(prompt_version=prompt_version)
    return {sid: meta["scores"] for sid, meta in labels.values_list("sample_id", "meta")}


def _score_metrics(
    rows: list[metrics.Row], ids: list[int], scored: dict[int, dict], half_as: str
) -> dict | None:
    """Calibration and ranking of the risk scores against the truth, read as the headline reads 0.5 (P(harmful)
    with 0.5 → harmful, P(1) with 0.5 → safe); None with fewer than ten scored samples."""
    key = "harmful" if half_as == "harmful" else "harmful_strict"
    pairs = [
        (scored[pk][key], metrics.harmful(row.truth, half_as))
        for pk, row in zip(ids, rows, strict=True)
        if pk in scored
    ]
    if len(pairs) < 10:
        return None
    report = calibration.score_report([p for p, _ in pairs], [y for _, y in pairs])
    return {**report, "reading": half_as}


def _localisation(sample_ids: list[int], kind: str, name: str, prompt_version: str) -> dict | None:
    """The first unsafe step a source located (meta.located) against the first harmful step the experts marked
    (the median of their marks): how often exactly, how often within one step, and the mean offset (positive: found
    late). Samples the experts marked but the source found no unsafe step in count as missed."""
    if kind == Evaluation.SourceKind.JURY or not name:
        return None
    found: dict[int, int | None] = {}
    labels = Label.objects.filter(sample_id__in=sample_ids, source_kind=kind, source_name=name,
                                  meta__has_key="located")  # fmt: skip
    if kind in VERSIONED_SOURCES:
        labels = labels.filter(prompt_version=prompt_version)
    for sample_id, meta in labels.values_list("sample_id", "meta"):
        found[sample_id] = meta["located"].get("first_unsafe_step")
    if not found:
        return None
    marks: dict[int, list[int]] = defaultdict(list)
    for sample_id, meta in Label.objects.filter(
        sample_id__in=list(found), source_kind=Label.SourceKind.EXPERT, meta__first_harmful_step__isnull=False
    ).values_list("sample_id", "meta"):
        if isinstance(meta.get("first_harmful_step"), int):
            marks[sample_id].append(meta["first_harmful_step"])
    pairs = [(found[sid], sorted(steps)[(len(steps) - 1) // 2]) for sid, steps in marks.items()]
    located = [(p, m) for p, m in pairs if p is not None]
    if not pairs:
        return {"located": len(found), "n": 0}
    return {
        "located": len(found),
        "n": len(pairs),
        "missed": len(pairs) - len(located),
        "exact": sum(p == m for p, m in located) / len(pairs),
        "within_one": sum(abs(p - m) <= 1 for p, m in located) / len(pairs),
        "mean_offset": (sum(p - m for p, m in located) / len(located)) if located else None,
    }


def _asked_with(source_kind: str, source_name: str) -> str:
    """The template a source's labels are asked with: a guard's own; a juror's or the oracle's, as its latest
    labels were; else the sitting jury's."""
    version: str | None = None
    if source_kind == Evaluation.SourceKind.GUARD:
        version = (
            GuardCheckpoint.objects.filter(name=source_name).values_list("prompt_version", flat=True).first()
        )
    elif source_kind in (Evaluation.SourceKind.JUROR, Evaluation.SourceKind.ORACLE) and source_name:
        latest = Label.objects.filter(source_kind=source_kind, source_name=source_name).order_by(
            "-created_at", "-pk"
        )
        version = latest.values_list("prompt_version", flat=True).first()
    return version or jury_prompt_version()


def evaluation_run(
    *, source_kind: str, source_name: str = "", subsets: list[str] | None = None, truth: str = "imported",
    prompt_version: str = "", half_as: str = metrics.HALF_AS[0], user=None,
) -> Evaluation:  # fmt: skip
    """Score one label source against the ground truth on the test subsets and store the result.

    Both binary readings of 0.5 are stored; `half_as` picks the headline one (0.5 → harmful by default, as the paper).
    Labels asked with another prompt never count: `prompt_version` defaults to the guard checkpoint's template (a
    guard source), the juror's own, else the one the sitting jury asks with.
    """
    if not prompt_version:
        prompt_version = _asked_with(source_kind, source_name)
    if half_as not in metrics.HALF_AS:
        raise EvaluationError(f"unknown reading of 0.5 {half_as!r}; use one of {', '.join(metrics.HALF_AS)}")
    if source_kind not in Evaluation.SourceKind.values:
        raise EvaluationError(
            f"unknown source kind {source_kind!r}; use one of {', '.join(Evaluation.SourceKind.values)}"
        )
    if truth not in TRUTHS:
        raise EvaluationError(f"unknown truth {truth!r}; use one of {', '.join(TRUTHS)}")
    subsets = subsets or test_subsets()
    if not subsets:
        raise EvaluationError("no test subsets: import samples with split=test first")
    known = set(
        Sample.objects.filter(subset__in=subsets).order_by().values_list("subset", flat=True).distinct()
    )
    if unknown := [s for s in subsets if s not in known]:
        raise EvaluationError(f"no samples in subset(s): {', '.join(unknown)}")
    if (
        source_kind not in (Evaluation.SourceKind.JURY,)
        and source_name
        and not Label.objects.filter(source_kind=source_kind, source_name=source_name).exists()
    ):
        raise EvaluationError(f"no labels from {source_kind} {source_name!r}")
    samples = list(Sample.objects.filter(subset__in=subsets).values_list("pk", "subset", "category"))
    ids = [pk for pk, _, _ in samples]
    truths = _truth(ids, truth)
    if not truths:
        raise EvaluationError(f"no {truth} ground-truth labels in {', '.join(subsets)}")
    predicted = _predictions(ids, source_kind, source_name, prompt_version)
    judged = [(pk, subset, category) for pk, subset, category in samples if pk in truths]
    rows = [
        metrics.Row(subset, category, truths[pk], predicted.get(pk), missing=pk not in predicted)
        for pk, subset, category in judged
    ]
    result = metrics.evaluate_rows(rows, list(subsets), half_as=half_as)
    scored = _risk_scores([pk for pk, _, _ in judged], source_kind, source_name, prompt_version)
    if (score_metrics := _score_metrics(rows, [pk for pk, _, _ in judged], scored, half_as)) is not None:
        result["scores"] = score_metrics
    localisation = _localisation([pk for pk, _, _ in judged], source_kind, source_name, prompt_version)
    if localisation is not None:
        result["localisation"] = localisation
    return Evaluation.objects.create(
        source_kind=source_kind,
        source_name=source_name,
        prompt_version=prompt_version if source_kind in VERSIONED_SOURCES else "",
        truth=truth,
        subsets=list(subsets),
        metrics=result,
        created_by=user,
    )


def evaluations_latest(limit: int = 12) -> list[Evaluation]:
    """The newest evaluation per (source, subsets, truth), newest first."""
    seen: set[tuple] = set()
    latest = []
    for evaluation in Evaluation.objects.order_by("-created_at", "-pk")[:500]:
        key = (evaluation.source_kind, evaluation.source_name, tuple(evaluation.subsets), evaluation.truth)
        if key not in seen:
            seen.add(key)
            latest.append(evaluation)
    return latest[:limit]


# -- calibration ------------------------------------------------------------------------------------------------

CALIBRATION_ORIGINS = (LabelOrigin.EXPERT, LabelOrigin.JURY_CONSENSUS)


def calibration_set(checkpoint: GuardCheckpoint) -> list[tuple[list[float], int]]:
    """The held-out calibration samples the checkpoint has scored: test-split samples whose training label the
    experts decided or the jury gave 3:0 (never trained on), with the level probabilities of the checkpoint's label
    and the index of the true level."""
    rows = Label.objects.filter(
        source_kind=Label.SourceKind.GUARD,
        source_name=checkpoint.name,
        prompt_version=checkpoint.prompt_version,
        meta__has_key="scores",
        sample__split=Split.TEST,
        sample__final_label__isnull=False,
        sample__final_label_origin__in=CALIBRATION_ORIGINS,
    ).values_list("meta", "sample__final_label")
    pairs = []
    for meta, truth in rows:
        probabilities = meta["scores"]["levels"]
        levels = sorted(probabilities, key=float)  # safe first, as the protocol orders them
        label = format_judgment(truth) if truth is not None else ""
        if label in levels:
            pairs.append(([probabilities[level] for level in levels], levels.index(label)))
    return pairs


def checkpoint_calibrate(checkpoint: GuardCheckpoint, *, minimum: int = 30) -> dict:
    """Fit the temperature of the checkpoint's level probabilities on its calibration set and store it, with the
    set's size and its ECE of P(harmful) before and after."""
    pairs = calibration_set(checkpoint)
    if len(pairs) < minimum:
        raise EvaluationError(
            f"{checkpoint.name}: {len(pairs)} scored calibration samples (test split, decided by experts or a 3:0 "
            f"jury); at least {minimum} are needed: judge the test subsets with it first"
        )
    probabilities, truth = [p for p, _ in pairs], [t for _, t in pairs]
    temperature = calibration.fit_temperature(probabilities, truth)
    first_harmful = 1  # the levels are ordered safe → harmful: every level after the first is harmful
    harmful = [t >= first_harmful for t in truth]

    def p_harmful(rows: list[list[float]]) -> list[float]:
        return [sum(row[first_harmful:]) for row in rows]

    scaled = [calibration.apply_temperature(row, temperature) for row in probabilities]
    checkpoint.calibration = {
        "temperature": round(temperature, 4),
        "n": len(pairs),
        "ece_before": round(calibration.expected_calibration_error(p_harmful(probabilities), harmful), 4),
        "ece_after": round(calibration.expected_calibration_error(p_harmful(scaled), harmful), 4),
        "fitted_at": timezone.now().isoformat(timespec="seconds"),
    }
    checkpoint.save(update_fields=["calibration"])
    return checkpoint.calibration


def calibrated(scores: dict | None, checkpoint: GuardCheckpoint) -> dict | None:
    """The audit answer's view of a verdict's scores under the checkpoint's temperature and threshold: the
    calibrated levels and P(harmful), and whether the threshold is crossed (None without a threshold). The threshold
    is read on the guard's own P(harmful), the scale the evaluation page's curves and threshold chooser are drawn on
    (and the disagreement inspector compares), so one chosen there flags the same samples here."""
    if not scores:
        return None
    temperature = checkpoint.calibration.get("temperature")
    levels = list(scores["levels"])
    values = [scores["levels"][level] for level in levels]
    if temperature:
        values = calibration.apply_temperature(values, temperature)
    harmful = sum(v for level, v in zip(levels, values, strict=True) if float(level) > 0)
    return {
        "levels": {level: round(v, 6) for level, v in zip(levels, values, strict=True)},
        "harmful": round(harmful, 6),
        "temperature": temperature,
        "threshold": checkpoint.threshold,
        "flagged": None if checkpoint.threshold is None else scores["harmful"] >= checkpoint.threshold,
    }


# -- the audit API ------------------------------------------------------------------------------------------------


def active_checkpoint(name: str = "") -> GuardCheckpoint:
    query = Q(name=name) if name else Q(is_active=True)
    checkpoint = GuardCheckpoint.objects.filter(query).first()
    if checkpoint is None:
        raise CheckpointError(f"no checkpoint named {name!r}" if name else "no active guard checkpoint")
    return checkpoint


def locate_threshold(checkpoint: GuardCheckpoint) -> float:
    """The P(harmful) from which a prefix counts as unsafe: the checkpoint's chosen threshold, else 0.5."""
    return 0.5 if checkpoint.threshold is None else checkpoint.threshold


def audit(item: AuditInput, checkpoint: GuardCheckpoint) -> Verdict:
    return backend_for(checkpoint).judge([item])[0]


class AuditTimeout(Exception):
    """The audit worker did not answer in time (none running, or all busy)."""


def audit_answer(
    checkpoint_id: int, question: str, thinking: str, answer: str, image: bytes | None, locate: bool = False,
    reading: str = "analysis",
) -> dict:  # fmt: skip
    """An audit's verdict as plain data (what the audit worker sends back): a CheckpointError becomes
    {"checkpoint_error": …}. With `locate`, a local checkpoint also reports P(harmful) per segment and per reasoning
    step, and the first unsafe step (`prefix_risk`: a local checkpoint reuses its key/value cache, a served one asks
    its server short continuations; None where the server cannot give log-probabilities)."""
    try:
        checkpoint = GuardCheckpoint.objects.get(pk=checkpoint_id)
        item = AuditInput(question, thinking, answer, image)
        backend = backend_for(checkpoint)
        verdict = backend.judge([item])[0]
        located = None
        if locate and isinstance(backend, TransformersGuard | OpenAIGuard) and verdict.status != "failed":
            located = backend.prefix_risk(item, locate_threshold(checkpoint), reading)  # type: ignore[arg-type]
    except GuardCheckpoint.DoesNotExist:
        return {"checkpoint_error": f"checkpoint #{checkpoint_id} no longer exists"}
    except CheckpointError as exc:
        return {"checkpoint_error": str(exc)}
    fields = ("status", "judgment", "analysis", "error", "latency_ms", "truncated_tokens", "scores")
    result = {name: getattr(verdict, name) for name in fields}
    return {**result, "located": located, "calibrated": calibrated(verdict.scores, checkpoint)}


def audit_on_worker(
    item: AuditInput, checkpoint: GuardCheckpoint, locate: bool = False, reading: str = "analysis"
) -> dict:
    """Judge one audit input where its inference belongs. A served checkpoint is called from here (this process only
    waits on the endpoint); a local one runs on the audit worker (the `audit` queue), never in a web process, and
    this waits at most GUARDTRACE_AUDIT_TIMEOUT_S for it (AuditTimeout after that; the message expires unread)."""
    image = item.image
    if checkpoint.endpoint:
        return audit_answer(checkpoint.pk, item.question, item.thinking, item.answer, image, locate, reading)
    from celery.exceptions import TimeoutError as CeleryTimeout

    from guardmodel.tasks import audit_task

    timeout = settings.GUARDTRACE_AUDIT_TIMEOUT_S
    encoded = None if image is None else base64.b64encode(image).decode("ascii")
    result = audit_task.apply_async(
        args=[checkpoint.pk, item.question, item.thinking, item.answer, encoded, locate, reading],
        expires=timeout,
    )
    try:
        answer = result.get(timeout=timeout, interval=0.02)
    except CeleryTimeout:
        raise AuditTimeout(
            f"the audit worker did not answer within {timeout:g} s (is a worker on the audit queue running?)"
        ) from None
    result.forget()  # read once: nothing of the input or verdict stays in the result store
    return answer


# -- incremental audit sessions -----------------------------------------------------------------------------------
# A session lives on the audit worker that opened it (its key/value cache cannot move): the open goes to the shared
# `audit` queue, and every later call to that worker's own queue (`audit_session_queue`), which the worker listens on
# besides `audit` (guardtrace.celery). The caller holds a signed token naming the worker, the session and its owner.

SESSION_SALT = "guardtrace.audit-session"
_session_store = None
_session_store_lock = threading.Lock()


def audit_session_queue(hostname: str) -> str:
    return f"audit.{hostname}"


def session_store():
    from qta.streaming import SessionStore

    global _session_store
    with _session_store_lock:
        if _session_store is None:
            _session_store = SessionStore(
                max_sessions=settings.GUARDTRACE_AUDIT_SESSIONS_MAX,
                max_bytes=settings.GUARDTRACE_AUDIT_SESSION_MEMORY_MB * 2**20,
                ttl_s=settings.GUARDTRACE_AUDIT_SESSION_TTL_S,
            )
        return _session_store


def _session_error(exc: Exception) -> dict:
    return {"error": {"status": getattr(exc, "status", 400), "detail": str(exc)}}


def session_action(action: str, *, owner: int, **kwargs) -> dict:
    """One call on this process's audit sessions, as plain data (what the audit worker sends back): `open` (with
    checkpoint_id, question, image), `append` (sid, segment, text), `state` (sid) or `close` (sid). A refusal is
    {"error": {"status": HTTP status, "detail": why}}."""
    from qta.streaming import StreamAudit, StreamError

    store = session_store()
    try:
        if action == "open":
            checkpoint = GuardCheckpoint.objects.get(pk=kwargs["checkpoint_id"])
            backend = backend_for(checkpoint)
            if isinstance(backend, TransformersGuard):
                store.drop_unless(
                    id(backend)
                )  # only one local model is kept loaded: the others' sessions end
            audit = StreamAudit(
                backend, kwargs["question"], kwargs.get("image"),
                threshold=locate_threshold(checkpoint),
                max_chars=settings.GUARDTRACE_AUDIT_MAX_TEXT_CHARS,
                reading=kwargs.get("reading", "analysis"),
            )  # fmt: skip
            first = audit.open()
            sid = store.add(audit, owner=owner, tag=id(backend))
            return {"sid": sid, "ttl_s": store.ttl_s, **first}
        sid = kwargs["sid"]
        if action == "append":
            return store.use(sid, owner, lambda audit: audit.append(kwargs["segment"], kwargs["text"]))
        if action == "state":
            return store.use(sid, owner, lambda audit: audit.state())
        if action == "close":
            return store.end(sid, owner)
        raise ValueError(f"unknown session action {action!r}")
    except GuardCheckpoint.DoesNotExist:
        return {
            "error": {"status": 503, "detail": f"checkpoint #{kwargs.get('checkpoint_id')} no longer exists"}
        }
    except CheckpointError as exc:
        return {"error": {"status": 503, "detail": str(exc)}}
    except StreamError as exc:  # a fault of the model or the code is a 500, not a refusal
        return _session_error(exc)


def session_on_worker(action: str, *, queue: str, owner: int, **kwargs) -> dict:
    """Run a session action where the session lives: the `audit` queue for `open` (any audit worker), the worker's
    own queue after that. The worker's hostname comes back as `worker` from an open. AuditTimeout as for audits."""
    from celery.exceptions import TimeoutError as CeleryTimeout

    from guardmodel.tasks import audit_session_task

    timeout = settings.GUARDTRACE_AUDIT_TIMEOUT_S
    if kwargs.get("image") is not None:
        kwargs["image"] = base64.b64encode(kwargs["image"]).decode("ascii")
    result = audit_session_task.apply_async(
        args=[action], kwargs={"owner": owner, **kwargs}, queue=queue or "audit", expires=timeout
    )
    try:
        answer = result.get(timeout=timeout, interval=0.01)
    except CeleryTimeout:
        where = "the audit worker holding this session" if queue and queue != "audit" else "the audit worker"
        raise AuditTimeout(f"{where} did not answer within {timeout:g} s") from None
    result.forget()
    return answer
