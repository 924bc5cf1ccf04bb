"""manage.py demo_guard: for `make run`, a tiny guard checkpoint built offline and registered as the active guard."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand

from guardmodel import services
from guardmodel.management.commands.build_tiny_guard import synthetic_texts
from guardmodel.models import GuardCheckpoint
from qta.tiny import build_tiny_guard


class Command(BaseCommand):
    help = (
        "Build and register a tiny (untrained) guard checkpoint when none is registered. Safe to run twice."
    )

    def handle(self, *args, **options):
        if GuardCheckpoint.objects.exists():
            self.stdout.write(f"{GuardCheckpoint.objects.count()} guard checkpoint(s) registered; none built")
            return
        folder = settings.VAR_DIR / "models" / "tiny-guard"
        if not (folder / "config.json").is_file():
            build_tiny_guard(folder, texts=synthetic_texts())
        services.checkpoint_register(
            name="tiny-guard", path=str(folder), base_model="tiny-qwen2.5-vl (random)", activate=True
        )
        self.stdout.write(
            self.style.SUCCESS(f"registered the tiny guard at {folder} as the active checkpoint")
            + "\n  judge the test subsets: Admin → Guard checkpoints → “Judge the test subsets and evaluate”,"
            + "\n  then see /evaluations/ (an untrained tiny guard answers out of format: its labels are invalid)"
        )
