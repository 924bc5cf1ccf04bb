from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from guardmodel import services
from guardmodel.models import Evaluation
from guardmodel.views import pct


class Command(BaseCommand):
    help = (
        "Score a label source against ground truth on test subsets and record an Evaluation. "
        "Sources: guard:NAME, juror:NAME, oracle:NAME, jury (the jury majority), imported:NAME, expert."
    )

    def add_arguments(self, parser):
        parser.add_argument("--source", required=True)
        parser.add_argument(
            "--subset", action="append", default=[], help="Repeatable. Default: all test subsets."
        )
        parser.add_argument("--truth", default="imported", choices=services.TRUTHS,
                            help="Ground truth: labels that came with the data (default), experts, or final labels.")  # fmt: skip
        parser.add_argument("--prompt-version", default=services.PROMPT_VERSION)

    def handle(self, *args, **o):
        kind, _, name = o["source"].partition(":")
        try:
            evaluation = services.evaluation_run(
                source_kind=kind, source_name=name, subsets=o["subset"] or None, truth=o["truth"],
                prompt_version=o["prompt_version"],
            )  # fmt: skip
        except services.EvaluationError as exc:
            raise CommandError(str(exc)) from exc
        self.print_table(evaluation)

    def print_table(self, evaluation: Evaluation) -> None:
        m = evaluation.metrics
        self.stdout.write(
            f"Evaluation #{evaluation.pk}: {evaluation.source_label} (truth: {evaluation.truth})"
        )
        self.stdout.write(f"{'subset':<24}{'n':>6}{'acc':>8}{'prec':>8}{'rec':>8}{'F1':>8}")
        for subset, s in m["subsets"].items():
            self.stdout.write(
                f"{subset:<24}{s['n']:>6}{pct(s['accuracy']):>8}{pct(s['precision']):>8}{pct(s['recall']):>8}"
                f"{pct(s['f1']):>8}"
            )
        self.stdout.write(
            f"{'average':<24}{'':>6}{pct(m['average']['accuracy']):>8}{'':>16}{pct(m['average']['f1']):>8}"
        )
        self.stdout.write(f"invalid {m['invalid']}, missing {m['missing']} (counted as wrong)")
        self.stdout.write("confusion (rows truth, columns " + " / ".join(m["confusion"]["columns"]) + "):")
        for label, counts in zip(m["confusion"]["rows"], m["confusion"]["matrix"], strict=True):
            self.stdout.write(f"  {label:>4}: " + " ".join(f"{n:>5}" for n in counts))
