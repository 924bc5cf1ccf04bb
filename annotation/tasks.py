from __future__ import annotations

import logging

from celery import shared_task

from annotation import exports, services
from common.work import on_worker_start

logger = logging.getLogger(__name__)


def _retention_sweep(after: str) -> None:
    """No scheduler runs in the embedded setup: each import and export that ends sweeps the uploads and archives
    past their retention. The job's end is recorded already, so a failed sweep is only logged."""
    try:
        services.import_uploads_purge()
    except Exception:  # noqa: BLE001
        logger.exception("deleting old uploads and exports after %s failed", after)


@shared_task(acks_late=True, soft_time_limit=3300, time_limit=3600)
def import_job_run_task(job_id: int) -> bool:
    """Run one import job (API or admin upload); a second delivery of the same message finds the job claimed and does nothing."""
    ran = services.import_job_run(job_id=job_id)
    _retention_sweep(f"import #{job_id}")
    return ran


# Exports of any size run here, never in a request: hours at most, beating every second (a silent one is redone).
@shared_task(acks_late=True, soft_time_limit=6 * 3600 - 300, time_limit=6 * 3600)
def export_job_run_task(job_id: int) -> bool:
    """Write one export's archive; a second delivery of the same message finds the job claimed and does nothing."""
    ran = exports.export_job_run(job_id=job_id)
    _retention_sweep(f"export #{job_id}")
    return ran


# A starting worker queues again the imports and exports a dead worker held, and deletes the uploads and export
# archives past their retention.
on_worker_start(services.import_jobs_resume)
on_worker_start(exports.export_jobs_resume)
on_worker_start(services.import_uploads_purge)
