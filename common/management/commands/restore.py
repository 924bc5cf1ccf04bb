"""manage.py restore ARCHIVE [--force]: an archive from `manage.py backup` into this instance (`make restore`)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from common.backup import BackupError, archive_resolve, backup_restore


class Command(BaseCommand):
    help = (
        "Restore a backup archive (a path, or a file name in GUARDTRACE_BACKUP_DIR) into this instance's database "
        "and media folder, then check them against the archive's manifest. Stop the web server and the workers "
        "first. Refuses a database holding data or a media folder holding files unless --force."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("archive")
        parser.add_argument(
            "--force",
            action="store_true",
            help="replace a database that holds data and delete what the media folder holds",
        )

    def handle(self, *args, archive: str, force: bool, **options) -> None:
        try:
            report = backup_restore(archive=archive_resolve(archive), force=force)
        except BackupError as exc:
            raise CommandError(str(exc)) from exc
        rows = sum(report.tables.values())
        self.stdout.write(
            self.style.SUCCESS(
                f"restored {rows:,} rows in {len(report.tables)} tables and {report.files:,} media files from "
                f"{report.archive} ({report.seconds:.1f} s); they match its manifest"
            )
        )
        if report.unapplied_migrations:
            self.stdout.write(
                f"the archive predates {len(report.unapplied_migrations)} migration(s) of this code: "
                "run `manage.py migrate`"
            )
