"""manage.py demo_jury: for `make run`, three tiny local-transformers jurors, trained once on CPU and cached under
`var/models/` (see demo/tiny_models.py), and a jury run over the demo set, worked to the end and stratified, so a newcomer
finds every stratum filled: 3:0 samples for SFT, 2:1 preference pairs for DPO, 1:1:1 samples in the expert queue.
Safe to run twice: trained jurors and finished runs are kept.

Every label comes from a juror generating its reply; the jurors differ by seed, data, label noise and policy on
borderline cases, as real jurors do."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand

from annotation.models import Sample, Stratum
from annotation.strata import stratify_all
from demo.expert_panel import demo_expert_panel
from demo.tiny_models import DEMO_JURORS, train_demo_jurors
from guardmodel.management.commands.build_tiny_guard import synthetic_texts
from jury import services
from jury.models import Juror, JuryRun
from qta.tiny import build_tiny_guard


class Command(BaseCommand):
    help = (
        "Train (once) and register three tiny local jurors, then run the jury over the demo samples (once)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--max-tokens", type=int, default=48, help="Reply length asked of each demo juror."
        )

    def handle(self, *args, max_tokens: int, **options):
        models = settings.VAR_DIR / "models"
        base = models / "tiny-juror-base"
        if not (base / "config.json").is_file():
            build_tiny_guard(base, texts=synthetic_texts())
        folders = train_demo_jurors(
            models, base, threads=settings.GUARDTRACE_TRAIN_THREADS, log=self.stdout.write
        )
        for name, folder in zip(DEMO_JURORS, folders, strict=True):
            juror, created = Juror.objects.update_or_create(
                name=name,
                defaults={"backend": Juror.Backend.TRANSFORMERS, "model_name": str(folder), "max_concurrency": 16,
                          "max_tokens": max_tokens, "timeout_s": 600},
            )  # fmt: skip
            self.stdout.write(f"{'registered' if created else 'kept'} juror {juror.name} ({folder})")
        if JuryRun.objects.exists() or not Sample.objects.exists():
            self.stdout.write(f"{JuryRun.objects.count()} jury run(s) exist; none started")
            if JuryRun.objects.exists():
                demo_expert_panel(self.stdout.write)
            return
        run = services.jury_run_create(selection={}, enqueue=False)
        self.stdout.write(f"jury run #{run.pk}: {run.total} labels over {run.samples} samples…")
        for juror in run.jurors.all():
            outcome = services.juror_drive(juror.pk)
            self.stdout.write(f"  {juror.name}: {outcome.written} labels")
        stratify_all()
        counts = {label: Sample.objects.filter(stratum=value).count() for value, label in Stratum.choices}
        self.stdout.write(
            self.style.SUCCESS(
                f"jury run #{run.pk} finished: " + ", ".join(f"{k} {v}" for k, v in counts.items())
            )
            + f"\n  see /jury/runs/{run.pk}/, the strata on /samples/ and the expert queue on /expert/"
        )
        demo_expert_panel(self.stdout.write)
