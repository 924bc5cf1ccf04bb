from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from qta.release_shaped import write_release_shaped


class Command(BaseCommand):
    help = (
        "Write a small synthetic data set in the GuardTrace-VL release's file layout and shapes (test/, train/, "
        "prompts/), to try the release path without the release."
    )

    def add_arguments(self, parser):
        parser.add_argument("out_dir", type=Path)
        parser.add_argument("--train", type=int, default=120, help="Training rows (2/3 SFT, 1/3 DPO).")
        parser.add_argument("--test", type=int, default=60, help="Test rows over the two test files.")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--long-trace-chars", type=int, default=100_000)

    def handle(self, *args, **o):
        out: Path = o["out_dir"]
        if out.exists() and any(out.iterdir()):
            raise CommandError(f"{out}: not empty; choose a new folder")
        if o["train"] < 3 or o["test"] < 2:
            raise CommandError("--train must be at least 3 and --test at least 2")
        counts = write_release_shaped(
            out, train=o["train"], test=o["test"], seed=o["seed"], long_trace_chars=o["long_trace_chars"]
        )
        for name, rows in counts.items():
            self.stdout.write(f"{name}: {rows} rows")
