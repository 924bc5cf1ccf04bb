"""Long work whose worker died: found when a worker starts, and queued again."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from qta.workers import worker_gone


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
