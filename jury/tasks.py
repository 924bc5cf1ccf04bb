from __future__ import annotations

from celery import shared_task
from celery.signals import worker_ready

from jury import services


@shared_task(bind=True, acks_late=True, max_retries=None)
def juror_drive_task(self, juror_id: int) -> int:
    """Work one juror's open tasks in every running run. When another driver holds the juror, try again once its
    lease could have run out: if that driver died, this one takes over; if it lives, it will have done the work."""
    outcome = services.juror_drive(juror_id)
    if outcome.busy_for is not None:
        raise self.retry(countdown=min(60.0, outcome.busy_for + 1.0))
    return outcome.labels


@worker_ready.connect
def _resume_on_start(sender=None, **kwargs) -> None:
    """A worker starting up (after a crash, a deploy, a reboot) re-queues the work of unfinished runs."""
    services.resume_unfinished()
