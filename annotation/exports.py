"""Exports as zips: the samples matching an admin's filters, with all their labels, as `samples.jsonl` and
`images/<sha256>.<ext>` (what `export_qta` writes to a folder and `import_qta` reads back).

Small sets are written inside the request (`samples_export_archive`); anything larger is an export job
(`export_job_create`) that a worker on the `default` queue writes to a temporary file beside its final place under
media/exports/, renames into place once complete, and that admins then download through the API, each download
audited. Archives are deleted with the uploads after GUARDTRACE_UPLOAD_RETENTION_HOURS (services.import_uploads_purge).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import IO

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from annotation import selectors
from annotation.models import AuditEvent, ExportJob
from annotation.services import EXPORTS, export_records
from common.work import connection_recover, requeue_abandoned

logger = logging.getLogger(__name__)
Progress = Callable[[int], None]

# Images are PNG, JPEG, WEBP or GIF, compressed already: stored as they are, the archive is written at disk speed.
_IMAGE_COMPRESSION = zipfile.ZIP_STORED


def _archive_write(samples, out: IO[bytes], *, tick: Progress) -> int:
    """Write the zip of `samples` to `out`, calling `tick(1)` after each sample; returns the number written.

    Images go into the zip as they are met (each once); the JSONL lines wait in a temporary file and become
    `samples.jsonl` at the end, so memory holds one chunk of samples whatever the export's size."""
    count = 0
    now = time.localtime()[:6]
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf, tempfile.TemporaryFile() as lines:
        for record, image in export_records(samples):
            if image is not None:
                entry = zipfile.ZipInfo(record["image"], date_time=now)
                entry.compress_type = _IMAGE_COMPRESSION
                with image.file.open("rb") as src, zf.open(entry, "w") as dst:
                    shutil.copyfileobj(src, dst)
            lines.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
            count += 1
            tick(1)
        lines.seek(0)
        entry = zipfile.ZipInfo("samples.jsonl", date_time=now)
        entry.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(entry, "w", force_zip64=True) as dst:
            shutil.copyfileobj(lines, dst)
    return count


def samples_export_archive(*, samples, out: IO[bytes], user) -> int:
    """Write the zip of `samples` to `out` and record the export in the audit log; returns the number of samples."""
    count = _archive_write(samples, out, tick=lambda n: None)
    AuditEvent.objects.create(user=user, action=AuditEvent.Action.EXPORT, detail={"samples": count})
    return count


def export_job_create(*, filters: dict[str, str], user) -> ExportJob:
    """Queue an export of the samples matching `filters` (selectors.FILTERS, checked by the caller) on the worker
    once the row is committed."""
    job = ExportJob.objects.create(filters=selectors.clean_filters(filters), created_by=user)
    _enqueue(job.pk)
    return job


def _enqueue(job_id: int) -> None:
    from annotation.tasks import export_job_run_task  # the tasks module imports this one

    transaction.on_commit(lambda: export_job_run_task.delay(job_id))


def export_job_cancel(job: ExportJob) -> bool:
    """Stop an export: a queued one never starts, a running one stops at its next beat and leaves no file."""
    return ExportJob.cancel(job.pk)


def export_jobs_resume(*, host: str | None = None) -> list[int]:
    """Queue again the exports whose worker died (on this host: its process is gone; anywhere: no beat for
    GUARDTRACE_EXPORT_STALE_S), and the pending ones; each starts over (a dead worker's partial file is left to the
    retention sweep). Called when a worker starts; returns the jobs queued."""
    from annotation.tasks import export_job_run_task

    stale_before = timezone.now() - timedelta(seconds=settings.GUARDTRACE_EXPORT_STALE_S)
    return requeue_abandoned(
        ExportJob, enqueue=export_job_run_task.delay, host=host, stale_before=stale_before
    )


class ExportCancelled(Exception):
    """The export was cancelled (or taken over by another worker) while it was being written."""


class _Beats:
    """Counts an export's samples written, reports them at most every `every_s` seconds (the first and the last
    always), and stops the export once its job is no longer this worker's to run."""

    def __init__(self, job_id: int, *, total: int, every_s: float, on_progress: Progress | None) -> None:
        self.job_id, self.total, self.every_s, self.on_progress = job_id, total, every_s, on_progress
        self.done, self.last = 0, time.monotonic()
        self._beat(total=total, done=0)

    def __call__(self, n: int) -> None:
        self.done += n
        if self.on_progress is not None:
            self.on_progress(self.done)
        if time.monotonic() - self.last >= self.every_s or self.done == self.total:
            self._beat(done=min(self.done, self.total))

    def _beat(self, **fields) -> None:
        self.last = time.monotonic()
        if not ExportJob.beat(self.job_id, **fields):
            raise ExportCancelled


def export_job_run(*, job_id: int, every_s: float = 1.0, on_progress: Progress | None = None) -> bool:
    """Claim a pending export and write its archive: to a temporary file in media/exports/, renamed into place once
    complete, so the job never names a partial archive. Progress (`done` of `total` samples) is written every
    `every_s` seconds, which is also when a cancel is seen; `on_progress(done)` is told after each sample. False when
    another worker has the job or it already ran."""
    if not ExportJob.take(job_id, done=0, total=0, size_bytes=0, sample_count=0, archive=""):
        return False
    job = ExportJob.objects.get(pk=job_id)
    samples = selectors.sample_list(filters=selectors.clean_filters(job.filters))
    storage = ExportJob._meta.get_field("archive").storage
    folder = Path(storage.path(EXPORTS))
    folder.mkdir(parents=True, exist_ok=True)
    # A name of its own per run: a worker that took the job over never overwrites (or deletes) this one's file.
    run = uuid.uuid4().hex[:12]
    name = f"{EXPORTS}/guardtrace-export-{job_id}-{run}.zip"
    part = folder / f".guardtrace-export-{job_id}-{run}.part"
    try:
        beats = _Beats(job_id, total=samples.count(), every_s=every_s, on_progress=on_progress)
        with part.open("wb") as out:
            count = _archive_write(samples, out, tick=beats)
            out.flush()
            os.fsync(out.fileno())
        size = part.stat().st_size
        os.replace(part, storage.path(name))
    except ExportCancelled:
        part.unlink(missing_ok=True)
        return True
    except Exception as exc:
        # Never leave a claimed job "running": a redelivered message would find it claimed and do nothing. A dropped
        # database connection is replaced first, or recording the failure would fail too.
        logger.exception("export job %s failed", job_id)
        part.unlink(missing_ok=True)
        connection_recover()
        ExportJob.end(job_id, ExportJob.Status.FAILED, error=f"internal error: {type(exc).__name__}: {exc}")
        return True
    done = {"done": count, "total": max(count, beats.total), "sample_count": count, "size_bytes": size}
    if not ExportJob.end(job_id, ExportJob.Status.SUCCEEDED, archive=name, **done):
        # Cancelled (or taken over) between its last beat and now: the archive is nobody's.
        storage.delete(name)
        return True
    AuditEvent.objects.create(
        user=job.created_by,
        action=AuditEvent.Action.EXPORT,
        detail={"samples": count, "export_job": job_id, "filters": job.filters},
    )
    return True


def export_download_record(*, user, job: ExportJob) -> None:
    """Record in the audit log that `user` downloaded the export's archive."""
    AuditEvent.objects.create(
        user=user,
        action=AuditEvent.Action.EXPORT_DOWNLOAD,
        detail={"export_job": job.pk, "samples": job.sample_count, "filters": job.filters},
    )
