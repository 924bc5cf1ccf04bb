from __future__ import annotations

from celery import shared_task
from celery.signals import worker_ready

from generation import runs


@shared_task(acks_late=True)
def generation_drive_task(run_id: int, generator_id: int) -> int:
    """Work one generator's tasks in a run; a redelivered message finds them claimed or done and does no harm."""
    return runs.generation_drive(run_id, generator_id)


@worker_ready.connect
def _resume_on_start(sender=None, **kwargs) -> None:
    """A worker starting up (after a crash, a deploy, a reboot) re-queues the drivers of unfinished runs."""
    runs.resume_unfinished()
