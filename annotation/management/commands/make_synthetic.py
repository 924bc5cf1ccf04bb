"""manage.py make_synthetic OUT_DIR [--count N] [--seed S]"""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from qta.synthetic import generate


class Command(BaseCommand):
    help = "Write a synthetic QTA set with known ground truth (samples.jsonl + images/) for demos and tests."

    def add_arguments(self, parser) -> None:
        parser.add_argument("out_dir", type=Path)
        parser.add_argument("--count", type=int, default=400)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--test-fraction", type=float, default=0.2)

    def handle(self, *args, out_dir: Path, count: int, seed: int, test_fraction: float, **options):
        if count < 1:
            raise CommandError("--count must be at least 1")
        if not 0 <= test_fraction < 1:
            raise CommandError("--test-fraction must be in [0, 1)")
        counts = generate(out_dir, count=count, seed=seed, test_fraction=test_fraction)
        summary = ", ".join(f"{subset}: {n}" for subset, n in sorted(counts.items()))
        self.stdout.write(
            self.style.SUCCESS(f"wrote {count} samples to {out_dir / 'samples.jsonl'} ({summary})")
        )
