from __future__ import annotations

from celery import shared_task
from django.conf import settings

from common.work import on_worker_start
from training import services


@shared_task(bind=True, acks_late=True, max_retries=None)
def training_run_task(self, run_id: int) -> str:
    """Drive one training round. While another round holds the device, wait and try again; a duplicate or
    redelivered message finds the round claimed and does nothing."""
    outcome = services.training_run_execute(run_id=run_id)
    if outcome == "busy":
        raise self.retry(countdown=settings.GUARDTRACE_TRAIN_WAIT_S)
    return outcome


# A worker starting after a crash marks the rounds its predecessor was driving as interrupted (resumable).
on_worker_start(services.training_runs_interrupt_dead)
