from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from annotation.models import Sample
from guardmodel import services
from guardmodel.management.commands.evaluate import evaluation_table
from guardmodel.models import GuardJob


class Command(BaseCommand):
    help = "Judge samples with a guard checkpoint (a guard job; queued on the gpu worker, or run here with --sync)."

    def add_arguments(self, parser):
        parser.add_argument("--checkpoint", default="", help="Checkpoint name (default: the active one).")
        parser.add_argument(
            "--subset", action="append", default=[], help="Repeatable. Default: all test subsets."
        )
        parser.add_argument("--sync", action="store_true", help="Run in this process instead of the worker.")
        parser.add_argument("--evaluate", action="store_true", help="Record an evaluation at the end.")
        parser.add_argument(
            "--locate", action="store_true",
            help="Also score each reasoning step and keep the first unsafe one on the labels.",
        )  # fmt: skip

    def handle(self, *args, **o):
        try:
            checkpoint = services.active_checkpoint(o["checkpoint"])
        except Exception as exc:
            raise CommandError(f"{exc} (see: manage.py register_guard)") from exc
        subsets = o["subset"] or services.test_subsets()
        ids = list(Sample.objects.filter(subset__in=subsets).values_list("pk", flat=True))
        if not ids:
            raise CommandError(f"no samples in {', '.join(subsets) or 'any test subset'}")
        job = services.guard_job_create(
            checkpoint=checkpoint, sample_ids=ids, evaluate_subsets=subsets if o["evaluate"] else None,
            enqueue=not o["sync"], locate=o["locate"],
        )  # fmt: skip
        if o["sync"]:
            services.guard_job_run(job_id=job.pk)
            job.refresh_from_db()
            self.stdout.write(
                f"{job}: {job.get_status_display()}, {job.done} judged, {job.skipped} already done, "
                f"{job.invalid} invalid, {job.failed} failed"
            )
            if job.status == GuardJob.Status.FAILED:
                raise CommandError(job.error.splitlines()[0])
            for line in evaluation_table(job.evaluation) if job.evaluation else []:
                self.stdout.write(line)
        else:
            self.stdout.write(f"{job} queued: {job.total} samples; progress at /guard/jobs/{job.pk}/")
