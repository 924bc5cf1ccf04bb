from __future__ import annotations

from celery import shared_task
from django.conf import settings

from common.work import on_worker_start, on_worker_watch
from jury import services


@shared_task(bind=True, acks_late=True, max_retries=None)
def juror_drive_task(self, juror_id: int) -> int:
    """Work one juror's open tasks in every running run. When another driver holds the juror, try again once its
    lease could have run out: if that driver died, this one takes over; if it lives, it will have done the work."""
    outcome = services.juror_drive(juror_id, worker=self.request.hostname or "")
    if outcome.busy_for is not None:
        raise self.retry(countdown=min(60.0, outcome.busy_for + 1.0))
    return outcome.written


# A starting worker re-queues the work of unfinished runs; a live jury worker looks, every half lease, for jurors
# whose driver died with its worker.
on_worker_start(services.resume_unfinished)
on_worker_watch(("jury",), lambda: settings.GUARDTRACE_JURY_LEASE_S / 2, services.requeue_orphaned)
