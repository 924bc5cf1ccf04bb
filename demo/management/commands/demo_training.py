"""manage.py demo_training: for `make run`, a finished SFT round on the demo jury's consensus and expert labels.

The untrained tiny guard (demo_guard) is judged on the test subsets first, then fine-tuned through the same service
an admin's "New SFT round" uses; the round's checkpoint is evaluated on the test subsets and made the active guard,
so /evaluations/ shows the guard learning. DPO and OGDPO are left for the newcomer to launch from the admin and
follow live. Safe to run twice: nothing is trained when a round exists."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from annotation.models import Sample, Split
from guardmodel.models import Evaluation, GuardCheckpoint
from guardmodel.services import checkpoint_activate, guard_job_create, guard_job_run, test_subsets
from training import services
from training.datasets import SnapshotError
from training.models import TrainingRun


class Command(BaseCommand):
    help = "Train and evaluate one tiny SFT round from the active guard on the demo's labels (once)."

    def handle(self, *args, **options):
        if TrainingRun.objects.exists():
            self.stdout.write(f"{TrainingRun.objects.count()} training round(s) exist; none started")
            return
        base = GuardCheckpoint.objects.filter(is_active=True).first()
        if base is None:
            self.stdout.write(
                "no active guard checkpoint to train from (run demo_guard first); no round started"
            )
            return
        self._evaluate_base(base)
        admin = get_user_model().objects.filter(username="admin").first()
        try:
            run = services.training_run_launch(stage="sft", base_checkpoint=base, tiny=True, user=admin,
                                               enqueue=False)  # fmt: skip
        except (services.TrainingError, SnapshotError) as exc:
            self.stdout.write(f"no SFT round started: {exc}")
            return
        assert run.snapshot is not None  # an SFT round's set is stored at launch
        self.stdout.write(f"SFT round #{run.pk} on {run.snapshot.records} records…")
        outcome = services.training_run_execute(run_id=run.pk)
        run.refresh_from_db()
        if outcome != TrainingRun.Status.SUCCEEDED or run.output_checkpoint is None:
            self.stdout.write(self.style.ERROR(f"SFT round #{run.pk} {outcome}: {run.error}"))
            return
        checkpoint_activate(run.output_checkpoint)
        f1 = run.evaluation.metrics["average"]["f1"] if run.evaluation else None
        self.stdout.write(
            self.style.SUCCESS(
                f"SFT round #{run.pk} finished: {run.step} steps, loss {run.loss:.3f}; "
                + (
                    f"F1 on the test subsets {f1:.3f}"
                    if f1 is not None
                    else f"not evaluated ({run.evaluation_error})"
                )
                + f"; {run.output_checkpoint.name} is now the active guard"
            )
            + f"\n  see /training/runs/{run.pk}/ and /evaluations/; launch DPO from Admin → Training runs"
        )

    def _evaluate_base(self, base: GuardCheckpoint) -> None:
        if Evaluation.objects.filter(source_kind=Evaluation.SourceKind.GUARD, source_name=base.name).exists():
            return
        subsets = test_subsets()
        ids = list(Sample.objects.filter(split=Split.TEST).exclude(subset="").values_list("pk", flat=True))
        if not subsets or not ids:
            return
        job = guard_job_create(checkpoint=base, sample_ids=ids, evaluate_subsets=subsets, enqueue=False)
        guard_job_run(job_id=job.pk)
        self.stdout.write(
            f"judged the {len(ids)} test samples with the untrained {base.name} (for comparison)"
        )
