"""Long work on Celery workers — imports, guard jobs, jury runs, generation runs, expansions, training rounds —
shares one status set, one notion of "finished", one requeue of work whose worker died, and one place where a
starting worker resumes what each app left unfinished."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from celery.signals import worker_ready
from django.conf import settings
from django.db import models

from qta.engine import RetryPolicy
from qta.workers import worker_gone

log = logging.getLogger(__name__)


class JobStatus(models.TextChoices):
    """Lifecycle of every kind of long work."""

    PENDING = "pending", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"
    # Stopped by a dead worker with its progress kept; resuming carries on from there.
    INTERRUPTED = "interrupted", "Interrupted (resumable)"


# The statuses after which long work does no more (interrupted work can still be resumed).
FINISHED = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
STATUS_LENGTH = 12


class LongWork:
    """For models of long work whose `status` is a JobStatus: whether it has finished."""

    status: str

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


def requeue_abandoned(
    model, *, enqueue: Callable[[int], object], host: str | None = None, stale_before: datetime | None = None
) -> list[int]:
    """Put back to pending the running rows of `model` (status, worker, started_at) whose worker died on this host,
    or — with `stale_before` — started before it anywhere; then queue every pending row, whose message may be lost.
    The row's claim makes a job queued twice run once. Returns the ids queued."""
    Status = model.Status
    running = model.objects.filter(status=Status.RUNNING).exclude(worker="")
    for pk, worker, started in running.values_list("pk", "worker", "started_at"):
        if worker_gone(worker, host=host) or (stale_before and started and started < stale_before):
            model.objects.filter(pk=pk, status=Status.RUNNING, worker=worker).update(
                status=Status.PENDING, worker=""
            )
    queued = list(model.objects.filter(status=Status.PENDING).values_list("pk", flat=True))
    for pk in queued:
        enqueue(pk)
    return queued


def retry_policy() -> RetryPolicy:
    """How every model call is retried (jurors, generators): attempts and backoff from settings."""
    return RetryPolicy(
        attempts=settings.GUARDTRACE_JURY_ATTEMPTS,
        base_delay_s=settings.GUARDTRACE_JURY_BACKOFF_S,
        max_delay_s=settings.GUARDTRACE_JURY_BACKOFF_MAX_S,
    )


_resumers: dict[str, Callable[[], object]] = {}


def on_worker_start(resume: Callable[[], object]) -> Callable[[], object]:
    """Register `resume` to run when a worker starts (after a crash, a deploy, a reboot). Each kind of long work
    registers one, next to its tasks; registering the same function twice keeps one."""
    _resumers[f"{resume.__module__}.{resume.__qualname__}"] = resume
    return resume


def resume_all() -> dict[str, object]:
    """Run every registered resume; one that fails is logged and does not stop the others."""
    results: dict[str, object] = {}
    for name, resume in _resumers.items():
        try:
            results[name] = resume()
        except Exception:  # noqa: BLE001 - a broken resume must not keep the worker from resuming the rest
            log.exception("resuming %s on worker start failed", name)
            results[name] = None
    return results


@worker_ready.connect
def _resume_on_start(sender=None, **kwargs) -> None:
    resume_all()
