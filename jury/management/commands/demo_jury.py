"""manage.py demo_jury: for `make run`, three local-transformers jurors on tiny checkpoints built offline, and a jury
run over the demo set queued for the worker, so a newcomer sees a real run and its progress page. Safe to run twice.

The checkpoints are untrained: most of their replies cannot be read, so the demo run shows invalid labels and
incomplete samples — honestly, as the jury would report them. Every label comes from a juror call."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand

from annotation.models import Sample
from guardmodel.management.commands.build_tiny_guard import synthetic_texts
from guardmodel.tiny import TinySpec, build_tiny_guard
from jury import services
from jury.models import Juror, JuryRun

DEMO_JURORS = (("tiny-juror-a", 1), ("tiny-juror-b", 2), ("tiny-juror-c", 3))


class Command(BaseCommand):
    help = "Register three tiny local jurors and queue a jury run over the demo samples (once)."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--max-tokens", type=int, default=48, help="Reply length asked of each demo juror."
        )

    def handle(self, *args, max_tokens: int, **options):
        texts = None
        for name, seed in DEMO_JURORS:
            folder = settings.VAR_DIR / "models" / name
            if not (folder / "config.json").is_file():
                texts = texts or synthetic_texts()
                # Different seeds and a livelier initialisation: three jurors that do not all say the same thing.
                build_tiny_guard(folder, texts=texts, spec=TinySpec(seed=seed, initializer_range=0.3))
            juror, created = Juror.objects.get_or_create(
                name=name,
                defaults={"backend": Juror.Backend.TRANSFORMERS, "model_name": str(folder), "max_concurrency": 16,
                          "max_tokens": max_tokens, "timeout_s": 600},
            )  # fmt: skip
            self.stdout.write(f"{'registered' if created else 'kept'} juror {juror.name} ({folder})")
        if JuryRun.objects.exists() or not Sample.objects.exists():
            self.stdout.write(f"{JuryRun.objects.count()} jury run(s) exist; none queued")
            return
        run = services.jury_run_create(selection={})
        self.stdout.write(
            self.style.SUCCESS(f"queued jury run #{run.pk}: {run.total} labels over {run.samples} samples")
            + f"\n  watch it at /jury/runs/{run.pk}/ once the server is up (the worker starts with it)"
        )
