"""manage.py calibrate_guard NAME: fit the temperature of a guard checkpoint's risk scores on its held-out
calibration samples (test split, decided by experts or a 3:0 jury) and store it; `--threshold P` sets the P(harmful)
from which the audit API flags a sample."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from guardmodel import services
from guardmodel.models import GuardCheckpoint


class Command(BaseCommand):
    help = (
        "Fit a guard checkpoint's score temperature on held-out samples; optionally set its flag threshold."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="the checkpoint's name")
        parser.add_argument("--threshold", type=float, help="P(harmful) from which the audit API flags (0–1)")
        parser.add_argument("--minimum", type=int, default=30, help="fewest calibration samples to fit on")

    def handle(self, *args, name: str, threshold: float | None, minimum: int, **options):
        checkpoint = GuardCheckpoint.objects.filter(name=name).first()
        if checkpoint is None:
            raise CommandError(f"no guard checkpoint named {name!r}")
        if threshold is not None and not 0 <= threshold <= 1:
            raise CommandError(f"--threshold {threshold}: a probability between 0 and 1")
        try:
            fitted = services.checkpoint_calibrate(checkpoint, minimum=minimum)
        except services.EvaluationError as exc:
            raise CommandError(str(exc)) from None
        if threshold is not None:
            checkpoint.threshold = threshold
            checkpoint.save(update_fields=["threshold"])
        self.stdout.write(
            f"{name}: temperature {fitted['temperature']} on {fitted['n']} held-out samples; ECE of P(harmful) "
            f"{fitted['ece_before']} → {fitted['ece_after']}"
            + (f"; flags from P(harmful) ≥ {threshold}" if threshold is not None else "")
        )
