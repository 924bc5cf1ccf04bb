from __future__ import annotations

from celery import shared_task

from annotation import services
from common.work import on_worker_start


@shared_task(acks_late=True, soft_time_limit=3300, time_limit=3600)
def import_job_run_task(job_id: int) -> bool:
    """Run one import job (API or admin upload); a second delivery of the same message finds the job claimed and does nothing."""
    return services.import_job_run(job_id=job_id)


# A starting worker queues again the imports a dead worker held.
on_worker_start(services.import_jobs_resume)
