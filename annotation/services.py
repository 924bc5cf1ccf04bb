"""Writes to the sample store. Views, the API, commands and tasks call these and nothing else writes."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import IO, cast

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from annotation import strata
from annotation.models import (
    AuditEvent,
    ExportJob,
    ImageAsset,
    ImportJob,
    Label,
    Sample,
)
from common.errors import ApplicationError, Conflict
from common.work import connection_recover, requeue_abandoned
from qta.images import (
    ArchiveRejected,
    ImageInfo,
    ImageRejected,
    ImageSource,
    ZipImageSource,
    inspect_image,
)
from qta.protocol import JUDGMENTS
from qta.sample_files import (
    NO_DEFAULTS,
    FileDefaults,
    RecordError,
    SampleRecord,
    file_defaults,
    parse_records,
)

BATCH = 1000
logger = logging.getLogger(__name__)
Progress = Callable[[int], None]


class ImportRejected(Exception):
    """The file has errors and nothing was stored. `errors` lists each as `file:line: field: reason`."""

    def __init__(self, errors: list[RecordError]) -> None:
        super().__init__(f"{len(errors)} error(s); nothing was imported")
        self.errors = errors


class LabelConflict(Conflict):
    """A label from this source already exists on the sample for this prompt version."""


@dataclass
class ImportReport:
    created: int = 0
    labels_created: int = 0
    images_created: int = 0
    duplicates: list[str] = field(default_factory=list)
    errors: list[RecordError] = field(default_factory=list)
    sample_ids: list[int] = field(default_factory=list)


def _in_chunks(queryset, field: str, values: list, *columns: str) -> list[tuple]:
    """`columns` of the rows whose `field` is in `values`, queried BATCH values at a time (SQLite's variable limit)."""
    rows: list[tuple] = []
    for start in range(0, len(values), BATCH):
        rows.extend(queryset.filter(**{f"{field}__in": values[start : start + BATCH]}).values_list(*columns))
    return rows


def content_hash(*, question: str, thinking: str, answer: str, image_sha256: str | None) -> str:
    canonical = json.dumps([question, thinking, answer, image_sha256 or ""], ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass
class _Checked:
    record: SampleRecord
    image: ImageInfo | None
    content_hash: str


def _check_images(
    records: list[SampleRecord],
    images: ImageSource | None,
    name: str,
    errors: list[RecordError],
    progress: Progress,
) -> list[_Checked]:
    checked: list[_Checked] = []
    for record in records:
        info = None
        if record.image is not None:
            try:
                if images is None:
                    raise ImageRejected("the file names an image but no images folder or archive was given")
                data = images.read(record.image, max_bytes=settings.GUARDTRACE_MAX_IMAGE_BYTES)
                info = inspect_image(
                    data,
                    max_pixels=settings.GUARDTRACE_MAX_IMAGE_PIXELS,
                    max_bytes=settings.GUARDTRACE_MAX_IMAGE_BYTES,
                )
            except ImageRejected as exc:
                errors.append(RecordError(name, record.line, "image", f"{record.image}: {exc}"))
                progress(1)
                continue
        digest = content_hash(
            question=record.question,
            thinking=record.thinking,
            answer=record.answer,
            image_sha256=info.sha256 if info else None,
        )
        checked.append(_Checked(record, info, digest))
        progress(1)
    return checked


def _drop_duplicates(checked: list[_Checked], name: str) -> tuple[list[_Checked], list[str]]:
    duplicates: list[tuple[int, str]] = []
    first_line: dict[str, int] = {}
    unique: list[_Checked] = []
    for item in checked:
        if item.content_hash in first_line:
            duplicates.append((item.record.line, f"duplicate of line {first_line[item.content_hash]}"))
            continue
        first_line[item.content_hash] = item.record.line
        unique.append(item)
    stored = dict(_in_chunks(Sample.objects, "content_hash", list(first_line), "content_hash", "id"))
    if stored:
        kept = []
        for item in unique:
            if item.content_hash in stored:
                duplicates.append(
                    (item.record.line, f"already stored as sample #{stored[item.content_hash]}")
                )
            else:
                kept.append(item)
        unique = kept
    return unique, [f"{name}:{line}: {reason}" for line, reason in sorted(duplicates)]


def samples_import(
    *,
    data: bytes,
    name: str,
    fmt: str,
    images: ImageSource | None = None,
    skip_invalid: bool = False,
    user=None,
    progress: Progress | None = None,
    parsed: Progress | None = None,
    defaults: FileDefaults = NO_DEFAULTS,
) -> ImportReport:
    """Validate the whole file, then store it in one transaction.

    With errors and `skip_invalid` off, raises ImportRejected and stores nothing. Samples already stored (same
    content hash) are reported as duplicates and not stored again. `name` is the file as the user knows it (errors
    name it); `defaults` (from `formats.file_defaults`) fill the split, subset and source of rows that give none.
    `parsed(n)` is told how many records the file holds, `progress(k)` each time k more are checked, and
    `progress(0)` once more just before storing (the last moment at which raising stops the import with nothing
    stored).
    """
    tick = progress or (lambda n: None)
    errors: list[RecordError] = []
    records: list[SampleRecord] = []
    for item in parse_records(
        data, name=name, fmt=fmt, max_chars=settings.GUARDTRACE_MAX_TEXT_CHARS, defaults=defaults
    ):
        if isinstance(item, RecordError):
            errors.append(item)
        else:
            records.append(item)
    if parsed is not None:
        parsed(len(records) + len(errors))
    tick(len(errors))
    checked = _check_images(records, images, name, errors, tick)
    errors.sort(key=lambda e: e.line)
    if errors and not skip_invalid:
        raise ImportRejected(errors)
    tick(0)
    retries = 2
    while True:
        unique, duplicates = _drop_duplicates(checked, name)
        report = ImportReport(duplicates=duplicates, errors=errors)
        written: list[str] = []
        try:
            if unique:
                _store(unique, images, report, user=user, name=name, written=written)
            return report
        except IntegrityError:
            # A concurrent import stored some of the same samples first: look again, store the rest.
            _image_files_discard(written)
            retries -= 1
            if retries < 0:
                raise
        except BaseException:
            # Rolled back (the database refused, the connection dropped, the worker is stopping): the image files
            # this attempt wrote would be left with no row.
            _image_files_discard(written)
            raise


def _store_image_files(
    unique: list[_Checked], images: ImageSource | None, written: list[str]
) -> dict[str, ImageAsset]:
    """Write each new image once (content-addressed), returning unsaved ImageAsset rows for those not in the DB;
    `written` gets the paths of the files this call wrote."""
    wanted: dict[str, _Checked] = {}
    for item in unique:
        if item.image is not None:
            wanted.setdefault(item.image.sha256, item)
    existing = {sha for (sha,) in _in_chunks(ImageAsset.objects, "sha256", list(wanted), "sha256")}
    new_assets: dict[str, ImageAsset] = {}
    for sha, item in wanted.items():
        if sha in existing:
            continue
        info = item.image
        assert info is not None and images is not None and item.record.image is not None
        asset = ImageAsset(
            sha256=sha, width=info.width, height=info.height, format=info.format, size_bytes=info.size_bytes
        )
        path = asset.file.field.generate_filename(asset, f"{sha}.{info.extension}")
        # A file left by an earlier, rolled-back import has the same bytes: reuse it.
        if not default_storage.exists(path):
            path = default_storage.save(
                path, ContentFile(images.read(item.record.image, max_bytes=info.size_bytes))
            )
            written.append(path)
        asset.file.name = path
        new_assets[sha] = asset
    return new_assets


def _store(
    unique: list[_Checked],
    images: ImageSource | None,
    report: ImportReport,
    *,
    user,
    name: str,
    written: list[str],
) -> None:
    new_assets = _store_image_files(unique, images, written)
    now = timezone.now()
    with transaction.atomic():
        ImageAsset.objects.bulk_create(new_assets.values(), batch_size=BATCH, ignore_conflicts=True)
        shas = list({item.image.sha256 for item in unique if item.image})
        image_ids = dict(_in_chunks(ImageAsset.objects, "sha256", shas, "sha256", "id"))
        samples = [
            Sample(
                question=item.record.question,
                thinking=item.record.thinking,
                answer=item.record.answer,
                image_id=image_ids[item.image.sha256] if item.image else None,
                subset=item.record.subset,
                split=item.record.split,
                category=item.record.category,
                input_variant=item.record.input_variant,
                source_dataset=item.record.source_dataset,
                generator_model=item.record.generator_model,
                external_id=item.record.external_id,
                provenance=item.record.provenance,
                content_hash=item.content_hash,
            )
            for item in unique
        ]
        Sample.objects.bulk_create(samples, batch_size=BATCH)
        labels = [
            Label(
                sample_id=sample.pk,
                source_kind=record.source_kind,
                source_name=record.source_name,
                prompt_version=record.prompt_version,
                analysis=record.analysis,
                judgment=record.judgment,
                raw_output=record.raw_output,
                status=record.status,
                latency_ms=record.latency_ms,
                created_at=record.created_at or now,
            )
            for sample, item in zip(samples, unique, strict=True)
            for record in item.record.labels
        ]
        Label.objects.bulk_create(labels, batch_size=BATCH)
        report.sample_ids = [sample.pk for sample in samples]
        strata.stratify(sample_ids=report.sample_ids)
        AuditEvent.objects.create(
            user=user, action=AuditEvent.Action.IMPORT, detail={"file": name, "samples": len(samples)}
        )
    report.created = len(samples)
    report.labels_created = len(labels)
    report.images_created = len(new_assets)


def _image_files_discard(paths: list[str]) -> None:
    """Delete the image files a rolled-back store wrote, except those an ImageAsset row names (a concurrent import
    that committed the same image first keeps its file). When the database cannot be asked, the files stay: a run
    of the import again reuses them by content."""
    if not paths:
        return
    try:
        connection_recover()
        kept = {path for (path,) in _in_chunks(ImageAsset.objects, "file", paths, "file")}
        for path in paths:
            if path not in kept:
                default_storage.delete(path)
    except Exception:  # noqa: BLE001 - the import's own error is the one to report
        logger.exception("could not delete the image files of a rolled-back import")


def label_record(
    *,
    sample: Sample,
    source_kind: str,
    source_name: str,
    judgment: float | None,
    prompt_version: str = "",
    analysis: str = "",
    raw_output: str = "",
    status: str = Label.Status.VALID,
    latency_ms: float | None = None,
    user=None,
) -> Label:
    """Store one label, re-stratify its sample (stratum, final label, pair, queue item), and log who wrote it."""
    if status == Label.Status.VALID and judgment not in JUDGMENTS:
        raise ApplicationError(f"judgment {judgment!r} is not one of 0, 0.5, 1", "judgment")
    if status != Label.Status.VALID and judgment is not None:
        raise ApplicationError(f"a label with status {status!r} has no judgment", "judgment")
    try:
        with transaction.atomic():
            label = Label.objects.create(
                sample=sample,
                source_kind=source_kind,
                source_name=source_name,
                prompt_version=prompt_version,
                judgment=judgment,
                analysis=analysis,
                raw_output=raw_output,
                status=status,
                latency_ms=latency_ms,
                created_by=user,
                created_at=timezone.now(),
            )
            strata.stratify(sample_ids=[sample.pk])
            AuditEvent.objects.create(
                user=user, action=AuditEvent.Action.LABEL_WRITE, sample=sample, label=label
            )
    except IntegrityError as exc:
        raise LabelConflict(
            f"sample #{sample.pk} already has a {source_kind} label from {source_name!r}"
            f" for prompt version {prompt_version!r}"
        ) from exc
    return label


def image_store(data: bytes, info: ImageInfo | None = None) -> ImageAsset:
    """The stored image with these bytes, written once (content-addressed) when new. `info` from `inspect_image`,
    or it is inspected here (ImageRejected when the bytes are not an allowed image)."""
    info = info or inspect_image(
        data, max_pixels=settings.GUARDTRACE_MAX_IMAGE_PIXELS, max_bytes=settings.GUARDTRACE_MAX_IMAGE_BYTES
    )
    existing = ImageAsset.objects.filter(sha256=info.sha256).first()
    if existing is not None:
        return existing
    asset = ImageAsset(sha256=info.sha256, width=info.width, height=info.height, format=info.format,
                       size_bytes=info.size_bytes)  # fmt: skip
    path = asset.file.field.generate_filename(asset, f"{info.sha256}.{info.extension}")
    if not default_storage.exists(path):  # a file left by a rolled-back import has the same bytes: reuse it
        path = default_storage.save(path, ContentFile(data))
    asset.file.name = path
    try:
        with transaction.atomic():
            asset.save()
    except IntegrityError:  # stored meanwhile by another process
        return ImageAsset.objects.get(sha256=info.sha256)
    return asset


def image_view_record(*, user, image: ImageAsset, sample: Sample | None) -> None:
    AuditEvent.objects.create(user=user, action=AuditEvent.Action.IMAGE_VIEW, image=image, sample=sample)


def _label_json(label: Label) -> dict:
    return {
        "source_kind": label.source_kind,
        "source_name": label.source_name,
        "prompt_version": label.prompt_version,
        "judgment": label.judgment,
        "analysis": label.analysis,
        "raw_output": label.raw_output,
        "status": label.status,
        "latency_ms": label.latency_ms,
        "created_at": label.created_at.isoformat(),
    }


def sample_json(sample: Sample, image_path: str | None) -> dict:
    """A sample in our JSONL format, with all its labels (what export writes and import reads back)."""
    return {
        "id": sample.pk,
        "question": sample.question,
        "thinking": sample.thinking,
        "answer": sample.answer,
        "image": image_path,
        "subset": sample.subset,
        "split": sample.split,
        "category": sample.category,
        "input_variant": sample.input_variant,
        "source_dataset": sample.source_dataset,
        "generator_model": sample.generator_model,
        "external_id": sample.external_id,
        "provenance": sample.provenance,
        "content_hash": sample.content_hash,
        "stratum": sample.stratum,
        "final_label": sample.final_label,
        "final_label_origin": sample.final_label_origin,
        "labels": [_label_json(label) for label in sample.labels.all()],
    }


def export_image_path(asset: ImageAsset) -> str:
    """Where an export keeps an image, as its samples' `image` names it: `images/<sha256>.<ext>`."""
    return f"images/{asset.sha256}.{Path(asset.file.name).suffix.lstrip('.')}"


def export_records(samples) -> Iterator[tuple[dict, ImageAsset | None]]:
    """`samples` in id order, each as its JSONL record, with the image to write at the record's `image` path the
    first time an export meets it (None after that, and for a sample without one). What both exports write."""
    queryset = samples.select_related("image").prefetch_related("labels").order_by("id")
    met: set[str] = set()
    # Real traces run to hundreds of kilobytes: a chunk of 500 samples with their labels bounds what is held.
    for sample in queryset.iterator(chunk_size=500):
        asset = sample.image
        if asset is None:
            yield sample_json(sample, None), None
            continue
        first = asset.sha256 not in met
        met.add(asset.sha256)
        yield sample_json(sample, export_image_path(asset)), asset if first else None


def samples_export(*, samples, out_dir: Path, user=None, progress: Progress | None = None) -> int:
    """Write `samples.jsonl` and `images/<sha256>.<ext>` under out_dir; returns the number of samples."""
    tick = progress or (lambda n: None)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    count = 0
    with (out_dir / "samples.jsonl").open("w", encoding="utf-8") as out:
        for record, image in export_records(samples):
            if image is not None:
                with image.file.open("rb") as src:
                    (out_dir / record["image"]).write_bytes(src.read())
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
            tick(1)
    AuditEvent.objects.create(
        user=user,
        action=AuditEvent.Action.EXPORT,
        detail={"samples": count},
    )
    return count


def import_job_create(
    *,
    data_file,
    images_archive=None,
    fmt: str,
    skip_invalid: bool,
    user,
    split: str = "",
    subset: str = "",
    source_dataset: str = "",
) -> ImportJob:
    """Store the uploaded files and queue the import on the worker once the row is committed.

    The uploads' own names are kept for the errors; the file-wide split, subset and source dataset are checked here
    (DefaultsRejected names the field)."""
    defaults = file_defaults(split=split, subset=subset, source_dataset=source_dataset)
    job = ImportJob.objects.create(
        data_file=data_file,
        images_archive=images_archive or "",
        original_name=_upload_name(data_file),
        images_original_name=_upload_name(images_archive) if images_archive else "",
        format=fmt,
        skip_invalid=skip_invalid,
        split=defaults.split,
        subset=defaults.subset,
        source_dataset=defaults.source_dataset,
        created_by=user,
    )
    _enqueue(job.pk)
    return job


def _enqueue(job_id: int) -> None:
    from annotation.tasks import import_job_run_task  # the tasks module imports this one

    transaction.on_commit(lambda: import_job_run_task.delay(job_id))


def _upload_name(upload) -> str:
    # An upload's name is what the browser sent: keep its last part, as Django's storage would.
    return Path(str(getattr(upload, "name", "") or "").replace("\\", "/")).name[:255]


def import_jobs_resume(*, host: str | None = None) -> list[int]:
    """Queue again the imports whose worker died (on this host: its process is gone; anywhere: no sign of life for
    GUARDTRACE_IMPORT_STALE_S), and the pending ones. An import stores everything in one transaction, so a killed
    one left no rows; the image files it wrote are reused by content on the second run. Called when a worker
    starts; returns the jobs queued."""
    from annotation.tasks import import_job_run_task

    stale_before = timezone.now() - timedelta(seconds=settings.GUARDTRACE_IMPORT_STALE_S)
    return requeue_abandoned(
        ImportJob, enqueue=import_job_run_task.delay, host=host, stale_before=stale_before
    )


class ImportCancelled(Exception):
    """The job was cancelled (or taken over) while its file was being checked: nothing was stored."""


class _JobProgress:
    """Reports an import's records checked, at most once a second, and stops it once cancelled."""

    def __init__(self, job_id: int, every_s: float = 1.0) -> None:
        self.job_id, self.every_s = job_id, every_s
        self.done, self.last = 0, time.monotonic()

    def parsed(self, total: int) -> None:
        self._beat(total=total)

    def __call__(self, n: int) -> None:
        self.done += n
        # Always asked just before storing (n == 0): a cancel until then stores nothing.
        if n == 0 or time.monotonic() - self.last >= self.every_s:
            self._beat(done=self.done)

    def _beat(self, **fields) -> None:
        self.last = time.monotonic()
        if not ImportJob.beat(self.job_id, **fields):
            raise ImportCancelled


def import_job_cancel(job: ImportJob) -> bool:
    """Stop an import: a queued one never starts; a running one stops before it stores anything (once storing has
    begun, it finishes)."""
    return ImportJob.cancel(job.pk)


def import_job_resume(job: ImportJob) -> bool:
    """Queue a cancelled, failed or interrupted import again, from the start (it stored nothing, or — failed with
    rows skipped — what it stored is found as duplicates). False when it is queued, running or succeeded, or its
    uploaded files were deleted (`import_uploads_purge`)."""
    kept = Q(upload_purged_at__isnull=True)
    if not ImportJob.requeue(job.pk, only=kept, errors=[], created=0, duplicates=0, done=0, total=0):
        return False
    _enqueue(job.pk)
    return True


@dataclass
class UploadPurge:
    jobs: int = 0  # imports whose uploaded files were deleted
    orphans: int = 0  # files under imports/ or exports/ that no job names
    freed_bytes: int = 0
    exports: int = 0  # exports whose archive was deleted


# Files under imports/ (exports/) that no import (export) names are left this long at least, whatever the retention: a
# file a request has just stored, whose import row is not committed yet, looks the same, and so does the archive an
# export is still writing.
ORPHAN_UPLOAD_GRACE = timedelta(hours=1)
_UPLOADS = "imports"
EXPORTS = "exports"


def import_uploads_purge(*, retention: timedelta | None = None) -> UploadPurge:
    """Delete the uploaded files of imports that ended (succeeded, failed or cancelled) longer than `retention` ago
    (default GUARDTRACE_UPLOAD_RETENTION_HOURS), recording it on each job, then the files under imports/ that no
    import names once as old; the same for export archives under exports/. A queued, running or interrupted job's
    files are never touched. Run by every worker as it starts and after each import and export; two at once delete
    each file once."""
    if retention is None:
        retention = timedelta(hours=settings.GUARDTRACE_UPLOAD_RETENTION_HOURS)
    now = timezone.now()
    cutoff = now - retention
    report = UploadPurge()
    ended = [ImportJob.Status.SUCCEEDED, ImportJob.Status.FAILED, ImportJob.Status.CANCELLED]
    due = ImportJob.objects.filter(status__in=ended, upload_purged_at__isnull=True).filter(
        Q(finished_at__lt=cutoff) | Q(finished_at__isnull=True, created_at__lt=cutoff)
    )
    for pk, data_name, images_name in due.values_list("pk", "data_file", "images_archive"):
        # The row first, by conditional update: a job queued again meanwhile keeps its files, and a crash between
        # this and the deletes leaves files no row names, which the orphan sweep below takes.
        purged = ImportJob.objects.filter(pk=pk, status__in=ended, upload_purged_at__isnull=True).update(
            upload_purged_at=now, data_file="", images_archive=""
        )
        if purged:
            report.jobs += 1
            report.freed_bytes += sum(_upload_delete(name) for name in (data_name, images_name) if name)
    orphans_before = now - max(retention, ORPHAN_UPLOAD_GRACE)
    named = {
        name for pair in ImportJob.objects.values_list("data_file", "images_archive") for name in pair if name
    }
    report.orphans, freed = _orphan_files_purge(_UPLOADS, named, older_than=orphans_before)
    report.freed_bytes += freed
    report.exports, freed = _export_archives_purge(cutoff=cutoff, now=now)
    report.freed_bytes += freed
    named = set(ExportJob.objects.exclude(archive="").values_list("archive", flat=True))
    orphans, freed = _orphan_files_purge(EXPORTS, named, older_than=orphans_before)
    report.orphans, report.freed_bytes = report.orphans + orphans, report.freed_bytes + freed
    if report.jobs or report.exports or report.orphans:
        logger.info(
            "upload retention: deleted the files of %d import(s), the archives of %d export(s) and %d orphan "
            "file(s), %d bytes",
            report.jobs,
            report.exports,
            report.orphans,
            report.freed_bytes,
        )
    return report


def _export_archives_purge(*, cutoff, now) -> tuple[int, int]:
    """Delete the archives of exports that ended before `cutoff`, recording it on each; (exports, bytes freed)."""
    ended = [ExportJob.Status.SUCCEEDED, ExportJob.Status.FAILED, ExportJob.Status.CANCELLED]
    due = (
        ExportJob.objects.filter(status__in=ended, archive_purged_at__isnull=True)
        .exclude(archive="")
        .filter(Q(finished_at__lt=cutoff) | Q(finished_at__isnull=True, created_at__lt=cutoff))
    )
    count = freed = 0
    for pk, name in due.values_list("pk", "archive"):
        # The row first, as for imports: a crash before the delete leaves a file the orphan sweep takes.
        purged = ExportJob.objects.filter(pk=pk, status__in=ended, archive_purged_at__isnull=True).update(
            archive_purged_at=now, archive=""
        )
        if purged:
            count, freed = count + 1, freed + _upload_delete(name)
    return count, freed


def _upload_delete(name: str) -> int:
    storage = ImportJob._meta.get_field("data_file").storage
    try:
        size = storage.size(name)
    except OSError:
        return 0  # gone already
    storage.delete(name)
    return size


def _orphan_files_purge(top: str, named: set[str], *, older_than) -> tuple[int, int]:
    """Delete the files under the storage's `top` folder that are not `named` and were last written before
    `older_than`; (files, bytes freed)."""
    storage = ImportJob._meta.get_field("data_file").storage
    folder = Path(storage.path(top))
    if not folder.is_dir():
        return 0, 0
    limit = older_than.timestamp()
    count = freed = 0
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        name = f"{top}/{path.relative_to(folder).as_posix()}"
        stat = path.stat()
        if name in named or stat.st_mtime >= limit:
            continue
        path.unlink(missing_ok=True)
        count, freed = count + 1, freed + stat.st_size
    return count, freed


def import_job_run(*, job_id: int) -> bool:
    """Claim a pending job and run it; False when another worker has it or it already ran."""
    if not ImportJob.take(job_id, done=0, total=0):
        return False
    job = ImportJob.objects.get(pk=job_id)
    progress = _JobProgress(job_id)
    images: ImageSource | None = None
    archive: IO[bytes] | None = None
    try:
        if job.images_archive:
            archive = cast(IO[bytes], job.images_archive.open("rb"))
            images = ZipImageSource(
                archive, name=job.images_original_name or Path(job.images_archive.name or "images.zip").name
            )
        with job.data_file.open("rb") as handle:
            data = handle.read()
        report = samples_import(
            data=data,
            name=job.file_name,
            fmt=job.format,
            images=images,
            skip_invalid=job.skip_invalid,
            user=job.created_by,
            progress=progress,
            parsed=progress.parsed,
            defaults=FileDefaults(split=job.split, subset=job.subset, source_dataset=job.source_dataset),
        )
    except ImportCancelled:
        return True
    except ImportRejected as exc:
        job.status, job.errors = ImportJob.Status.FAILED, [str(e) for e in exc.errors]
    except ArchiveRejected as exc:
        job.status, job.errors = ImportJob.Status.FAILED, [str(exc)]
    except Exception as exc:
        # Never leave a claimed job "running": a redelivered message would find it claimed and do nothing. A dropped
        # database connection is replaced first, or recording the failure would fail too.
        logger.exception("import job %s failed", job_id)
        connection_recover()
        job.error = f"internal error: {type(exc).__name__}: {exc}"
        job.status, job.errors = ImportJob.Status.FAILED, [job.error]
    else:
        job.status = ImportJob.Status.SUCCEEDED
        job.created, job.duplicates = report.created, len(report.duplicates)
        job.errors = [str(e) for e in report.errors] + report.duplicates
    finally:
        if images is not None:
            images.close()
        if archive is not None:
            archive.close()
    # Once stored, the import is over whatever came meanwhile (its rows are there, so it reports them); a failed one
    # that was cancelled meanwhile stays cancelled.
    now = timezone.now()
    ours = [ImportJob.Status.RUNNING]
    if job.status == ImportJob.Status.SUCCEEDED:
        ours.append(ImportJob.Status.CANCELLED)
    ImportJob.objects.filter(pk=job_id, worker=job.worker, status__in=ours).update(
        status=job.status, created=job.created, duplicates=job.duplicates, errors=job.errors, error=job.error,
        done=progress.done,
        finished_at=now, heartbeat_at=now,
    )  # fmt: skip
    return True
