"""Jury runs: creating them over a selection of samples, driving each juror's work, cancelling, resuming, progress.

How a run's work is done without losing or doubling a label:
- a run is one `JuryTask` per sample × juror; each juror's tasks are driven by one process at a time, the holder of
  its lease (`common.models.Lease`, renewed while it works, taken over once expired), so the juror's concurrency limit holds across
  workers and runs;
- the driver claims tasks by conditional update (pending, or claimed by a driver whose lease is gone), keeps up to
  the juror's limit of calls in flight from a thread pool, and writes each result in the same transaction that
  moves its task out of *claimed* — only if the task is still claimed by this driver;
- labels are unique per sample × source × prompt version in the database, so even a result written twice by two
  drivers (one of which lost its lease) leaves one label;
- the Celery message is acknowledged late, a worker that starts up re-queues the drivers of unfinished runs, and
  every live jury worker looks each half lease for a juror whose driver's lease ran out with work left
  (`requeue_orphaned`), so a killed worker's work is taken over after its lease expires, restart or not.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Exists, F, Max, Min, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from annotation import strata
from annotation.models import Label, Sample, Split, Stratum
from common.errors import ApplicationError
from common.models import lease_renew
from common.work import DriveOutcome, Driver, drive_under_lease, drivers_requeue_orphaned
from guardmodel.services import ajudge_readable, judge_readable, read_inputs, verdict_label
from jury.backends import backend_for_juror
from jury.models import Juror, JuryRun, JuryTask
from qta.engine import Verdict
from qta.workers import worker_id

log = logging.getLogger(__name__)
OPEN = (JuryTask.Status.PENDING, JuryTask.Status.CLAIMED)


class JuryError(ApplicationError):
    """A run cannot be started as asked; the message names the field."""


# -- selection and creation -------------------------------------------------------------------------------------

SELECTION_FIELDS = ("sample_ids", "subset", "subsets", "split", "stratum", "category", "unlabelled")


def select_samples(selection: dict) -> QuerySet[Sample]:
    """Samples matching every given criterion. Unknown fields and bad values raise JuryError naming the field."""
    unknown = sorted(set(selection) - set(SELECTION_FIELDS))
    if unknown:
        raise JuryError(
            f"selection: unknown field(s) {', '.join(unknown)}; expected {', '.join(SELECTION_FIELDS)}"
        )
    samples = Sample.objects.all()
    if (ids := selection.get("sample_ids")) is not None:
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise JuryError("selection.sample_ids: expected a list of sample ids (integers)")
        samples = samples.filter(pk__in=ids)
    if subset := selection.get("subset"):
        samples = samples.filter(subset=subset)
    if (subsets := selection.get("subsets")) is not None:
        # Any of these subsets ("" is the samples stored without one); the run form offers the stored ones.
        if not isinstance(subsets, list) or not all(isinstance(name, str) for name in subsets):
            raise JuryError("selection.subsets: expected a list of subset names")
        samples = samples.filter(subset__in=subsets)
    for field, choices in (("split", Split.values), ("stratum", Stratum.values)):
        if value := selection.get(field):
            if value not in choices:
                raise JuryError(f"selection.{field}: {value!r} is not one of {', '.join(choices)}")
            samples = samples.filter(**{field: value})
    if category := selection.get("category"):
        samples = samples.filter(category=category)
    if selection.get("unlabelled"):
        samples = samples.filter(stratum=Stratum.UNLABELLED)
    return samples


def sitting_jurors() -> QuerySet[Juror]:
    return Juror.objects.filter(enabled=True, is_oracle=False)


@dataclass
class JurorPlan:
    """One juror's share of a run about to start: what it will be asked, and what is skipped and why."""

    juror: Juror
    tasks: int  # sample × juror pairs to ask
    labelled: int  # already labelled validly with the juror's prompt version: skipped
    waiting: int  # waiting in another unfinished run: skipped there, not doubled here


@dataclass
class RunPlan:
    """What `jury_run_create` would make of a selection now: the preview the run form shows before launching."""

    sample_ids: list[int]
    prompt_version: str
    jurors: list[JurorPlan]
    # Other jurors' valid labels on these samples with the same template: strata count every juror's label.
    others: dict[str, int]

    @property
    def samples(self) -> int:
        return len(self.sample_ids)

    @property
    def tasks(self) -> int:
        return sum(j.tasks for j in self.jurors)

    @property
    def pairs(self) -> int:
        """Sample × juror pairs: tasks plus the skipped ones."""
        return self.samples * len(self.jurors)

    @property
    def skipped(self) -> int:
        return self.pairs - self.tasks

    @property
    def labelled(self) -> int:
        return sum(j.labelled for j in self.jurors)

    @property
    def waiting(self) -> int:
        return sum(j.waiting for j in self.jurors)


def _jury_for_run(jurors: list[Juror] | None) -> tuple[list[Juror], str]:
    """The jurors a run seats (default: every sitting juror) and the one prompt version they share."""
    jurors = list(jurors) if jurors is not None else list(sitting_jurors())
    if not jurors:
        raise JuryError("jurors: none enabled — configure jurors in the admin (Jury → Jurors) first")
    if oracles := [j.name for j in jurors if j.is_oracle]:
        raise JuryError(f"jurors: {', '.join(oracles)} is the oracle and does not sit on the jury")
    if disabled := [j.name for j in jurors if not j.enabled]:
        raise JuryError(f"jurors: {', '.join(disabled)} is disabled")
    versions = sorted({j.prompt_version for j in jurors})
    if len(versions) > 1:
        # Strata compare three judgments asked the same way: one run, one template.
        asked = "; ".join(f"{j.name}: {j.prompt_version}" for j in jurors)
        raise JuryError(f"jurors: they must share one prompt template to be compared ({asked})")
    return jurors, versions[0]


def _juror_plan(juror: Juror, ids: list[int]) -> tuple[JurorPlan, list[int]]:
    """The juror's plan over these samples, and the ids it will be asked about."""
    labelled = set(
        Label.objects.filter(
            source_kind=Label.SourceKind.JUROR,
            source_name=juror.name,
            prompt_version=juror.prompt_version,
            status=Label.Status.VALID,
        ).values_list("sample_id", flat=True)
    )
    waiting = set(
        JuryTask.objects.filter(juror=juror, status__in=OPEN, run__status=JuryRun.Status.RUNNING).values_list(
            "sample_id", flat=True
        )
    )
    todo = [pk for pk in ids if pk not in labelled and pk not in waiting]
    n_labelled = sum(pk in labelled for pk in ids)
    plan = JurorPlan(juror, tasks=len(todo), labelled=n_labelled, waiting=len(ids) - len(todo) - n_labelled)
    return plan, todo


def jury_run_plan(*, selection: dict, jurors: list[Juror] | None = None) -> RunPlan:
    """What a run over `selection` would ask now, per juror; raises JuryError as `jury_run_create` would.
    Reads only: the run form's preview. Labels written or runs started meanwhile change the figures."""
    seated, version = _jury_for_run(jurors)
    ids = list(select_samples(selection).order_by("pk").values_list("pk", flat=True))
    if not ids:
        raise JuryError("selection: no samples match")
    others = dict(
        Label.objects.filter(
            sample__in=select_samples(selection),
            source_kind=Label.SourceKind.JUROR,
            prompt_version=version,
            status=Label.Status.VALID,
        )
        .exclude(source_name__in=[j.name for j in seated])
        .values_list("source_name")
        .annotate(n=Count("id"))
        .order_by("source_name")
    )
    return RunPlan(ids, version, [_juror_plan(juror, ids)[0] for juror in seated], others)


def jury_size_warning(count: int, prompt_version: str) -> str:
    """'' for three jurors; else what the strata (annotation.strata) make of a sample labelled by `count`."""
    if count == 3:
        return ""
    if count < 3:
        return (
            f"The protocol's strata assume three jurors; this run seats {count}. A sample it labels gets "
            f"{count} jury label{'s' if count > 1 else ''} from it and stays incomplete — no SFT record, no DPO "
            f"pair, no expert item — unless other jurors have labelled it validly with {prompt_version}: strata "
            "count every juror's valid label, and need three."
        )
    half = count // 2
    tie = f"{half}:{half}" if count % 2 == 0 else f"{half}:{half}:1"
    return (
        f"The protocol's strata assume three jurors; this run seats {count}, so a sample can get {count} valid "
        f"labels. All equal: D3:0 (SFT). A strict majority ({count - 1}:1, say): D2:1 with the majority's label, "
        "but no DPO pair — a pair needs exactly three labels split 2:1. No strict majority "
        f"({tie}, say): D1:1:1, sent to the experts. Only valid labels count: a sample with exactly three follows "
        "the protocol."
    )


def jury_run_create(
    *, selection: dict, jurors: list[Juror] | None = None, user=None, enqueue: bool = True
) -> JuryRun:
    """A run giving each selected sample one label per juror for its prompt version. Pairs already labelled
    validly, or waiting in another unfinished run, are skipped; failed and invalid labels are asked again."""
    seated, version = _jury_for_run(jurors)
    ids = list(select_samples(selection).order_by("pk").values_list("pk", flat=True))
    if not ids:
        raise JuryError("selection: no samples match")
    with transaction.atomic():
        run = JuryRun.objects.create(selection=selection, prompt_version=version, samples=len(ids),
                                     created_by=user, started_at=timezone.now())  # fmt: skip
        run.jurors.set(seated)
        total = 0
        for juror in seated:
            _, todo = _juror_plan(juror, ids)
            tasks = [JuryTask(run=run, sample_id=pk, juror=juror) for pk in todo]
            JuryTask.objects.bulk_create(tasks, batch_size=2000)
            total += len(todo)
        run.total, run.skipped = total, len(ids) * len(seated) - total
        if not total:
            run.status, run.finished_at = JuryRun.Status.SUCCEEDED, timezone.now()
        run.save(update_fields=["total", "skipped", "status", "finished_at"])
        if enqueue and total:
            transaction.on_commit(lambda: enqueue_drivers(seated))
    return run


def enqueue_drivers(jurors) -> None:
    from jury.tasks import juror_drive_task

    for juror in jurors:
        juror_drive_task.apply_async((juror.pk,), queue=juror.queue)


def jury_run_cancel(run: JuryRun) -> bool:
    """Stops claiming the run's tasks; calls already in flight finish and are written."""
    return JuryRun.cancel(run.pk)


def jury_run_resume(run: JuryRun) -> bool:
    """Runs a cancelled run again, or re-queues the drivers of a running one (say its worker was lost)."""
    if (
        not JuryRun.objects.filter(pk=run.pk)
        .exclude(status=JuryRun.Status.SUCCEEDED)
        .update(status=JuryRun.Status.RUNNING, finished_at=None)
    ):
        return False
    jurors = Juror.objects.filter(tasks__run=run, tasks__status__in=OPEN).distinct()
    transaction.on_commit(lambda: enqueue_drivers(list(jurors)))
    _finish_runs([run.pk])
    return True


def resume_unfinished() -> int:
    """Queue a driver for every juror with open tasks in running runs (a worker starting up calls this)."""
    jurors = list(
        Juror.objects.filter(
            enabled=True, tasks__status__in=OPEN, tasks__run__status=JuryRun.Status.RUNNING
        ).distinct()
    )
    enqueue_drivers(jurors)
    return len(jurors)


def requeue_orphaned() -> list[int]:
    """Queue a driver for each juror whose driver died with its worker, leaving open work in a running run."""
    return drivers_requeue_orphaned(
        "juror:",
        has_work=lambda pk: _open_work(pk).filter(juror__enabled=True).exists(),
        enqueue=lambda pks: enqueue_drivers(list(Juror.objects.filter(pk__in=pks))),
    )


def _finish_runs(run_ids) -> None:
    open_tasks = JuryTask.objects.filter(run=OuterRef("pk"), status__in=OPEN)
    JuryRun.objects.filter(pk__in=list(run_ids), status=JuryRun.Status.RUNNING).exclude(
        Exists(open_tasks)
    ).update(status=JuryRun.Status.SUCCEEDED, finished_at=timezone.now())


# -- progress -------------------------------------------------------------------------------------------------------

THROUGHPUT_WINDOW_S = 60


@dataclass
class JurorProgress:
    juror: Juror
    valid: int = 0
    invalid: int = 0
    failed: int = 0
    pending: int = 0
    in_flight: int = 0
    per_second: float = 0.0

    @property
    def done(self) -> int:
        return self.valid + self.invalid + self.failed

    @property
    def total(self) -> int:
        return self.done + self.pending + self.in_flight

    @property
    def percent(self) -> int:
        return int(100 * self.done / self.total) if self.total else 100

    @property
    def eta_s(self) -> float | None:
        left = self.pending + self.in_flight
        if not left:
            return 0.0
        return left / self.per_second if self.per_second else None


def run_progress(run: JuryRun) -> list[JurorProgress]:
    """Per juror: labels by outcome, tasks left, labels per second over the last minute, and time left."""
    jurors = {j.pk: j for j in run.jurors.all()}
    progress = {pk: JurorProgress(juror) for pk, juror in jurors.items()}
    field = {
        "valid": "valid",
        "invalid": "invalid",
        "failed": "failed",
        "pending": "pending",
        "claimed": "in_flight",
    }
    for juror_id, status, n in (
        JuryTask.objects.filter(run=run).values_list("juror_id", "status").annotate(n=Count("id")).order_by()
    ):
        setattr(progress[juror_id], field[status], n)
    now = timezone.now()
    since = max(run.created_at, now - timedelta(seconds=THROUGHPUT_WINDOW_S))
    window = max(1.0, (now - since).total_seconds())
    for juror_id, n in (
        JuryTask.objects.filter(run=run, completed_at__gte=since)
        .values_list("juror_id")
        .annotate(n=Count("id"))
        .order_by()
    ):
        progress[juror_id].per_second = n / window
    return sorted(progress.values(), key=lambda p: p.juror.name)


@dataclass
class WorkerShare:
    """What one worker's drivers wrote in a run: how many results, for which jurors, from when to when."""

    worker: str  # "" for results written before workers were recorded
    labels: int
    jurors: list[str]
    first_at: datetime
    last_at: datetime


def run_workers(run: JuryRun) -> list[WorkerShare]:
    """The run's written results by the worker that drove them, busiest first: how the work spread over workers
    (a worker killed mid-run keeps what it wrote; whoever took its jurors over appears beside it)."""
    shares: dict[str, WorkerShare] = {}
    rows = (
        JuryTask.objects.filter(run=run, completed_at__isnull=False)
        .values_list("driven_by", "juror__name")
        .annotate(n=Count("id"), first=Min("completed_at"), last=Max("completed_at"))
        .order_by("driven_by", "juror__name")
    )
    for worker, juror, n, first, last in rows:
        share = shares.setdefault(worker, WorkerShare(worker, 0, [], first, last))
        share.labels += n
        share.jurors.append(juror)
        share.first_at, share.last_at = min(share.first_at, first), max(share.last_at, last)
    return sorted(shares.values(), key=lambda share: (-share.labels, share.worker))


# -- driving a juror's work -----------------------------------------------------------------------------------------


def _lease_key(juror_id: int) -> str:
    return f"juror:{juror_id}"


def _lease_renew(juror_id: int, token: str) -> bool:
    return lease_renew(_lease_key(juror_id), token, settings.GUARDTRACE_JURY_LEASE_S)


def _open_work(juror_id: int) -> QuerySet[JuryTask]:
    return JuryTask.objects.filter(juror_id=juror_id, status__in=OPEN, run__status=JuryRun.Status.RUNNING)


def juror_drive(juror_id: int, *, worker: str = "") -> DriveOutcome:
    """Work the juror's open tasks across all running runs until none is left (or the lease is lost). `worker`
    names who drives (the Celery node name; default this process, host:pid) on every task it writes."""
    if not Juror.objects.filter(pk=juror_id).exists():  # deleted since the message was sent: nothing to do
        return DriveOutcome()
    return drive_under_lease(
        _lease_key(juror_id),
        settings.GUARDTRACE_JURY_LEASE_S,
        drive=lambda token: _Driver(juror_id, token, worker or worker_id()).run(),
        more=lambda: _open_work(juror_id).filter(juror__enabled=True).exists(),
    )


@dataclass(frozen=True)
class _Item:
    task_id: int
    run_id: int
    sample_id: int


class _Driver(Driver):
    def __init__(self, juror_id: int, token: str, worker: str = ""):
        self.juror = Juror.objects.get(pk=juror_id)
        self.token = token
        self.worker = worker
        self.claims = 0
        self.kind = Label.SourceKind.ORACLE if self.juror.is_oracle else Label.SourceKind.JUROR
        self.name = f"juror-{self.juror.name}"
        self.renew_every_s = settings.GUARDTRACE_JURY_LEASE_S / 3
        self.flush_every = settings.GUARDTRACE_JURY_FLUSH

    def run(self) -> int:
        if not self.juror.enabled:
            return 0
        self.backend = backend_for_juror(self.juror)
        self.asynchronous = self.backend.asynchronous
        self.workers = self.backend.workers
        self.target = max(2 * self.backend.unit, 4 * self.backend.unit * self.backend.workers)
        return super().run()

    def renew(self) -> bool:
        return _lease_renew(self.juror.pk, self.token)

    def claim(self, want: int) -> list[tuple[list[_Item], list]]:
        items, inputs = self._claim(want)
        unit = self.backend.unit
        return [(items[i : i + unit], inputs[i : i + unit]) for i in range(0, len(items), unit)]

    def call(self, payload: list) -> list[Verdict]:
        return judge_readable(self.backend, payload)

    async def acall(self, payload: list) -> list[Verdict]:
        return await ajudge_readable(self.backend, payload)

    def cancelled(self, items: list) -> set:
        stopped = set(
            JuryRun.objects.filter(pk__in={item.run_id for item in items})
            .exclude(status=JuryRun.Status.RUNNING)
            .values_list("pk", flat=True)
        )
        return {item for item in items if item.run_id in stopped}

    def dropped(self, items: list) -> None:
        JuryTask.objects.filter(
            pk__in=[item.task_id for item in items], status=JuryTask.Status.CLAIMED
        ).update(status=JuryTask.Status.PENDING, claim_token="")

    def flush(self, done: list) -> int:
        return self._flush(done)

    def release(self) -> None:
        # Whatever this driver claimed and did not write goes back to the queue.
        JuryTask.objects.filter(
            claim_token__startswith=f"{self.token}:", status=JuryTask.Status.CLAIMED
        ).update(status=JuryTask.Status.PENDING, claim_token="")

    def _claim(self, want: int) -> tuple[list[_Item], list]:
        self.claims += 1
        claim = f"{self.token}:{self.claims}"
        claimable = Q(status=JuryTask.Status.PENDING) | (
            Q(status=JuryTask.Status.CLAIMED) & ~Q(claim_token__startswith=f"{self.token}:")
        )
        candidates = (
            JuryTask.objects.filter(claimable, juror=self.juror, run__status=JuryRun.Status.RUNNING)
            .order_by("run_id", "id")
            .values("pk")[:want]
        )
        if not JuryTask.objects.filter(claimable, pk__in=Subquery(candidates)).update(
            status=JuryTask.Status.CLAIMED, claim_token=claim
        ):
            return [], []
        items = [_Item(*row) for row in JuryTask.objects.filter(claim_token=claim).order_by("id").values_list(
            "pk", "run_id", "sample_id")]  # fmt: skip
        return items, read_inputs([item.sample_id for item in items])

    def _flush(self, buffer: list[tuple[_Item, Verdict]]) -> int:
        """Write the results this driver still owns, with their tasks' new status, in one transaction."""
        juror, now = self.juror, timezone.now()
        with transaction.atomic():
            owned = set(
                JuryTask.objects.select_for_update()
                .filter(pk__in=[item.task_id for item, _ in buffer], status=JuryTask.Status.CLAIMED,
                        claim_token__startswith=f"{self.token}:")
                .values_list("pk", flat=True)
            )  # fmt: skip
            rows = [(item, verdict) for item, verdict in buffer if item.task_id in owned]
            if not rows:
                return 0
            sample_ids = [item.sample_id for item, _ in rows]
            mine = Label.objects.filter(
                sample_id__in=sample_ids, source_kind=self.kind, source_name=juror.name,
                prompt_version=juror.prompt_version,
            )  # fmt: skip
            # A failed or invalid label from an earlier run is replaced; a valid one never is.
            if stale := list(mine.exclude(status=Label.Status.VALID).values_list("pk", flat=True)):
                Label.objects.filter(pk__in=stale).delete()
            labels = []
            by_status: dict[str, list[int]] = defaultdict(list)
            for item, verdict in rows:
                label = verdict_label(verdict, sample_id=item.sample_id, kind=self.kind, name=juror.name,
                                      prompt_version=juror.prompt_version)  # fmt: skip
                label.meta["run"] = item.run_id
                labels.append(label)
                by_status[verdict.status].append(item.task_id)
            Label.objects.bulk_create(labels, ignore_conflicts=True)
            for status, task_ids in by_status.items():
                JuryTask.objects.filter(pk__in=task_ids).update(
                    status=status, completed_at=now, claim_token="", driven_by=self.worker
                )
            if self.kind == Label.SourceKind.JUROR:
                strata.stratify(sample_ids=sample_ids, prompt_version=juror.prompt_version)
            for run_id, n in Counter(item.run_id for item, _ in rows).items():
                JuryRun.objects.filter(pk=run_id).update(done=F("done") + n, heartbeat_at=now)
            _finish_runs({item.run_id for item, _ in rows})
        return len(rows)
