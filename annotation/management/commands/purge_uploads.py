"""manage.py purge_uploads [--hours H]: delete uploaded import files and export archives past their retention."""

from __future__ import annotations

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from annotation import services


class Command(BaseCommand):
    help = (
        "Delete the uploaded files of imports that ended (succeeded, failed, cancelled) more than "
        "GUARDTRACE_UPLOAD_RETENTION_HOURS ago, and files under media/imports/ that no import names once as old; "
        "the same for export archives under media/exports/. Queued and running jobs keep theirs. Workers run this "
        "as they start and after each import and export."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--hours", type=float, help="retention in hours (default: GUARDTRACE_UPLOAD_RETENTION_HOURS)"
        )

    def handle(self, *args, hours: float | None, **options) -> None:
        if hours is not None and not hours >= 0:
            raise CommandError("--hours: must be a number of at least 0")
        retention = timedelta(hours=hours) if hours is not None else None
        report = services.import_uploads_purge(retention=retention)
        self.stdout.write(
            self.style.SUCCESS(
                f"deleted the uploads of {report.jobs} import(s), the archives of {report.exports} export(s) and "
                f"{report.orphans} orphan file(s), "
                f"{report.freed_bytes / 1e6:,.1f} MB freed"
            )
        )
