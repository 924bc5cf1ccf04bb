"""manage.py export_qta OUT_DIR [--subset S] [--split train|test] [--category C] [--stratum S]"""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from annotation import selectors, services


class Command(BaseCommand):
    help = "Export samples with all their labels as samples.jsonl + images/ (import_qta reads it back)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("out_dir", type=Path)
        for key in selectors.FILTERS:
            parser.add_argument(f"--{key.replace('_', '-')}", dest=key)

    def handle(self, *args, out_dir: Path, **options):
        if out_dir.exists() and any(out_dir.iterdir()):
            raise CommandError(f"{out_dir}: folder exists and is not empty")
        filters = selectors.clean_filters({key: options.get(key) for key in selectors.FILTERS})
        for key in selectors.FILTERS:
            if options.get(key) and key not in filters:
                raise CommandError(f"--{key.replace('_', '-')}: unknown value {options[key]!r}")
        samples = selectors.sample_list(filters=filters)
        with tqdm(
            total=samples.count(), unit="sample", desc="exporting", disable=options["verbosity"] == 0
        ) as bar:
            count = services.samples_export(samples=samples, out_dir=out_dir, progress=bar.update)
        self.stdout.write(self.style.SUCCESS(f"exported {count} samples to {out_dir}"))
