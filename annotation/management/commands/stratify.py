"""manage.py stratify: recompute strata, final labels, D2:1 preference pairs and the expert queue from the labels."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from annotation import strata


class Command(BaseCommand):
    help = (
        "Re-derive every sample's stratum, final label, preference pair and expert-queue item (idempotent)."
    )

    def handle(self, *args, **options):
        report = strata.stratify_all()
        self.stdout.write(
            f"{report.samples} samples: {report.changed} changed; pairs {report.pairs_created} made, "
            f"{report.pairs_updated} updated, {report.pairs_removed} removed; expert queue +{report.queued} "
            f"-{report.unqueued}"
        )
