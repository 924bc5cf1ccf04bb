"""manage.py import_snapshot FILE --stage sft|dpo|ogdpo [--images DIR_OR_ZIP]: a training file made elsewhere (the
GuardTrace-VL release's SFT / DPO files, LLaMA-Factory sharegpt or alpaca, TRL) as an imported dataset snapshot.

For the release: `import_snapshot train/SFT_data.json --stage sft --images train/sft_images` (or a zip of it)."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from annotation.services import ImportRejected
from qta.images import ArchiveRejected, open_image_source
from training.datasets import SnapshotError, snapshot_import
from training.models import Stage


class Command(BaseCommand):
    help = "Import a training file (SFT rows or DPO pairs) as a dataset snapshot a round can train on."

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument("--stage", required=True, choices=Stage.values)
        parser.add_argument(
            "--images",
            type=Path,
            help="Folder or zip holding the images the rows name (default: the file's folder). A path is looked up "
            "as given (also under a single top folder, or without its leading folders: sft_images/a.png in the "
            "folder sft_images), then by its base name when that is unique.",
        )

    def handle(self, *args, file: Path, stage: str, images: Path | None, **options):
        if not file.is_file():
            raise CommandError(f"{file}: no such file")
        try:
            source = open_image_source(images or file.parent)
        except ArchiveRejected as exc:
            raise CommandError(str(exc)) from None
        try:
            snapshot = snapshot_import(file.read_bytes(), name=file.name, stage=stage, images=source)
        except ImportRejected as exc:
            raise CommandError("\n".join([str(exc), *map(str, exc.errors)])) from None
        except SnapshotError as exc:
            raise CommandError(str(exc)) from None
        finally:
            source.close()
        self.stdout.write(
            self.style.SUCCESS(f"{snapshot} stored: {snapshot.records} records ({snapshot.counts})")
            + f"\n  train on it: manage.py launch_round --stage {stage} --snapshot {snapshot.pk} (or Admin → Training runs"
            f" → New {Stage(stage).label} round, training set #{snapshot.pk})"
        )
