"""manage.py backup [--dir DIR]: the database and MEDIA_ROOT into one archive (`make backup`)."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from common.backup import BackupError, backup_create


class Command(BaseCommand):
    help = (
        "Write the database (SQLite: an online copy; PostgreSQL: pg_dump -Fc) and the media folder, with a manifest "
        "of row counts and file checksums, into one timestamped archive under GUARDTRACE_BACKUP_DIR."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--dir", dest="dest", type=Path, help="folder for the archive (default: GUARDTRACE_BACKUP_DIR)"
        )

    def handle(self, *args, dest: Path | None, **options) -> None:
        try:
            report = backup_create(dest_dir=dest)
        except BackupError as exc:
            raise CommandError(str(exc)) from exc
        rows = sum(report.tables.values())
        self.stdout.write(
            self.style.SUCCESS(
                f"backed up {rows:,} rows in {len(report.tables)} tables and {report.files:,} media files "
                f"({report.media_bytes / 1e6:,.1f} MB) to {report.path} "
                f"({report.size_bytes / 1e6:,.1f} MB, {report.seconds:.1f} s)"
            )
        )
