from __future__ import annotations

from celery import shared_task

from common.work import on_worker_start
from guardmodel import services


@shared_task(bind=True, acks_late=True)
def guard_job_run_task(self, job_id: int) -> bool:
    """Judge a guard job's samples. A redelivery (the worker died mid-job) takes the job over and skips what is done."""
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    return services.guard_job_run(job_id=job_id, redelivered=redelivered)


# A starting worker queues again the guard jobs a dead worker held.
on_worker_start(services.guard_jobs_resume)
