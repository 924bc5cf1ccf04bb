from __future__ import annotations

import logging

from celery import shared_task

from annotation import services
from common.work import on_worker_start

logger = logging.getLogger(__name__)


@shared_task(acks_late=True, soft_time_limit=3300, time_limit=3600)
def import_job_run_task(job_id: int) -> bool:
    """Run one import job (API or admin upload); a second delivery of the same message finds the job claimed and does nothing."""
    ran = services.import_job_run(job_id=job_id)
    # No scheduler runs in the embedded setup: each import that ends sweeps the uploads past their retention. The
    # import's end is recorded already, so a failed sweep is only logged.
    try:
        services.import_uploads_purge()
    except Exception:  # noqa: BLE001
        logger.exception("deleting old uploads after import #%s failed", job_id)
    return ran


# A starting worker queues again the imports a dead worker held, and deletes the uploads past their retention.
on_worker_start(services.import_jobs_resume)
on_worker_start(services.import_uploads_purge)
