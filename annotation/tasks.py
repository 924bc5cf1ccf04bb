from __future__ import annotations

from celery import shared_task
from celery.signals import worker_ready

from annotation import services


@shared_task(acks_late=True, soft_time_limit=3300, time_limit=3600)
def import_job_run_task(job_id: int) -> bool:
    """Run one import job (API or admin upload); a second delivery of the same message finds the job claimed and does nothing."""
    return services.import_job_run(job_id=job_id)


@worker_ready.connect
def _resume_on_start(sender=None, **kwargs) -> None:
    """A worker starting up (after a crash, a deploy, a reboot) queues again the imports a dead worker held."""
    services.import_jobs_resume()
