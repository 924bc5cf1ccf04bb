from __future__ import annotations

from celery import shared_task

from common.work import on_worker_start
from jury import services


@shared_task(bind=True, acks_late=True, max_retries=None)
def juror_drive_task(self, juror_id: int) -> int:
    """Work one juror's open tasks in every running run. When another driver holds the juror, try again once its
    lease could have run out: if that driver died, this one takes over; if it lives, it will have done the work."""
    outcome = services.juror_drive(juror_id, worker=self.request.hostname or "")
    if outcome.busy_for is not None:
        raise self.retry(countdown=min(60.0, outcome.busy_for + 1.0))
    return outcome.written


# A starting worker re-queues the work of unfinished runs.
on_worker_start(services.resume_unfinished)
