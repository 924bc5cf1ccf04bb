from __future__ import annotations

from celery import shared_task

from common.work import on_worker_start
from generation import runs, services


@shared_task(acks_late=True)
def generation_drive_task(run_id: int, generator_id: int) -> int:
    """Work one generator's tasks in a run; a redelivered message finds them claimed or done and does no harm."""
    return runs.generation_drive(run_id, generator_id)


@shared_task(acks_late=True)
def expansion_task(expansion_id: int) -> int:
    """Expand a queued expansion's seeds; a redelivered message finds it taken or finished and does no harm."""
    return services.expansion_work(expansion_id).done


# A starting worker re-queues the drivers of unfinished runs and the expansions a dead worker left.
on_worker_start(runs.resume_unfinished)
on_worker_start(services.expansions_resume)
