from __future__ import annotations

from celery import shared_task

from generation import runs


@shared_task(acks_late=True)
def generation_drive_task(run_id: int, generator_id: int) -> int:
    """Work one generator's tasks in a run; a redelivered message finds them claimed or done and does no harm."""
    return runs.generation_drive(run_id, generator_id)
