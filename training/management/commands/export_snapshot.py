"""manage.py export_snapshot ID DIR [--format trl|llamafactory]: a training set for training elsewhere."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from training.datasets import SnapshotError, snapshot_export
from training.models import DatasetSnapshot


class Command(BaseCommand):
    help = (
        "Export a dataset snapshot as TRL-ready JSONL (prompt/completion or prompt/chosen/rejected, images apart) "
        "or in LLaMA-Factory's multimodal sharegpt format (with dataset_info.json); images are copied to DIR/images."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("snapshot", type=int, help="Snapshot id (Admin → Dataset snapshots).")
        parser.add_argument("directory", type=Path)
        parser.add_argument("--format", choices=["trl", "llamafactory"], default="trl")

    def handle(self, *args, snapshot: int, directory: Path, format: str, **options) -> None:
        found = DatasetSnapshot.objects.filter(pk=snapshot).first()
        if found is None:
            raise CommandError(f"no snapshot #{snapshot}")
        try:
            data = snapshot_export(found, directory, fmt=format)
        except SnapshotError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"{found.records} records written to {data}")
