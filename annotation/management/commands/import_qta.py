"""manage.py import_qta FILE [--images DIR_OR_ZIP] [--format jsonl|guardtrace] [--skip-invalid]
[--split train|test] [--subset NAME] [--source-dataset NAME]"""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from annotation import services
from qta.images import ArchiveRejected, open_image_source
from qta.sample_files import FORMATS, DefaultsRejected, file_defaults, guess_format


class Command(BaseCommand):
    help = "Import QTA samples (our JSONL or the GuardTrace-VL release JSON) with their images."

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument(
            "--images",
            type=Path,
            help="Images folder or zip archive (default: the file's folder). A path is looked up as given (also "
            "under a single top folder, or without its leading folders), then by its base name when that is unique.",
        )
        parser.add_argument(
            "--format", choices=FORMATS, help="Default: guardtrace for .json, jsonl otherwise."
        )
        parser.add_argument(
            "--skip-invalid", action="store_true", help="Store the good lines, report the rest."
        )
        parser.add_argument("--max-errors", type=int, default=50, help="How many errors to print.")
        parser.add_argument("--split", default="", help="train or test, for rows that give no split.")
        parser.add_argument(
            "--subset", default="", help="Subset name (S-Eval, MMBench…) for rows that give none."
        )
        parser.add_argument(
            "--source-dataset", default="", help="Source dataset name for rows that give none."
        )

    def handle(
        self, *args, file: Path, images: Path | None, format: str | None, skip_invalid: bool, **options
    ):
        try:
            defaults = file_defaults(
                split=options["split"], subset=options["subset"], source_dataset=options["source_dataset"]
            )
        except DefaultsRejected as exc:
            raise CommandError(f"--{exc.field.replace('_', '-')}: {exc.reason}") from None
        if not file.is_file():
            raise CommandError(f"{file}: no such file")
        data = file.read_bytes()
        try:
            source = open_image_source(images or file.parent)
        except ArchiveRejected as exc:
            raise CommandError(str(exc)) from exc
        total = (
            sum(1 for line in data.split(b"\n") if line.strip())
            if (format or guess_format(file.name)) == "jsonl"
            else None
        )
        bar = tqdm(
            total=total, unit="sample", desc=f"checking {file.name}", disable=options["verbosity"] == 0
        )
        try:
            report = services.samples_import(
                data=data, name=str(file), fmt=format or guess_format(file.name), images=source,
                skip_invalid=skip_invalid, progress=bar.update, defaults=defaults,
            )  # fmt: skip
        except services.ImportRejected as exc:
            bar.close()
            self._print_errors([str(e) for e in exc.errors], options["max_errors"])
            raise CommandError(
                f"{file}: {len(exc.errors)} invalid line(s); nothing was imported "
                "(use --skip-invalid to import the valid lines)"
            ) from exc
        finally:
            source.close()
        bar.close()
        self._print_errors([str(e) for e in report.errors], options["max_errors"])
        for line in report.duplicates[: options["max_errors"]]:
            self.stderr.write(f"skipped {line}")
        self.stdout.write(self.style.SUCCESS(
            f"imported {report.created} samples, {report.labels_created} labels, {report.images_created} new images; "
            f"{len(report.duplicates)} duplicates skipped, {len(report.errors)} invalid lines skipped"
        ))  # fmt: skip

    def _print_errors(self, errors: list[str], limit: int) -> None:
        for error in errors[:limit]:
            self.stderr.write(error)
        if len(errors) > limit:
            self.stderr.write(f"… and {len(errors) - limit} more")
