from __future__ import annotations

from celery import shared_task

from common.work import on_worker_start, on_worker_watch
from generation import runs, services


@shared_task(bind=True, acks_late=True, max_retries=None)
def generation_drive_task(self, generator_id: int) -> int:
    """Work one generator's tasks in every running run. When another driver holds the generator, try again once its
    lease could have run out: if that driver died, this one takes over; if it lives, it will have done the work."""
    outcome = runs.generation_drive(generator_id)
    if outcome.busy_for is not None:
        raise self.retry(countdown=min(60.0, outcome.busy_for + 1.0))
    return outcome.written


@shared_task(acks_late=True)
def expansion_task(expansion_id: int) -> int:
    """Expand a queued expansion's seeds; a redelivered message finds it taken or finished and does no harm."""
    return services.expansion_work(expansion_id).done


# A starting worker re-queues the drivers of unfinished runs and the expansions a dead worker left; a live worker of
# either queue a generator can run on looks, every half lease, for generators whose driver died with its worker.
on_worker_start(runs.resume_unfinished)
on_worker_watch(("jury", "gpu"), lambda: runs.lease_s() / 2, runs.requeue_orphaned)
on_worker_start(services.expansions_resume)
