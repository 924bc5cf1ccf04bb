from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from guardmodel import services
from guardmodel.models import Evaluation
from guardmodel.views import pct
from qta import metrics

SCORES = ("accuracy", "precision", "recall", "f1")


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
        parser.add_argument(
            "--prompt-version",
            default="",
            help="Labels asked with this template (default: the source's own, else the sitting jury's).",
        )
        parser.add_argument(
            "--half-as",
            default=metrics.HALF_AS[0],
            choices=metrics.HALF_AS,
            help="How a 0.5 judgment counts in the headline binary scores (truth and predictions alike); "
            "default harmful, as the paper states. Both readings are stored either way.",
        )

    def handle(self, *args, **o):
        kind, _, name = o["source"].partition(":")
        try:
            evaluation = services.evaluation_run(
                source_kind=kind, source_name=name, subsets=o["subset"] or None, truth=o["truth"],
                prompt_version=o["prompt_version"], half_as=o["half_as"],
            )  # fmt: skip
        except services.EvaluationError as exc:
            raise CommandError(str(exc)) from exc
        for line in evaluation_table(evaluation):
            self.stdout.write(line)


def evaluation_table(evaluation: Evaluation) -> list[str]:
    """The lines `evaluate` prints for a stored evaluation: both readings per subset, the average, the confusion."""
    lines: list[str] = []
    m = evaluation.metrics
    (headline, scores), (other, other_scores) = metrics.stored_readings(m)
    other_scores = other_scores or {}
    lines.append(f"Evaluation #{evaluation.pk}: {evaluation.source_label} (truth: {evaluation.truth})")
    lines.append(
        f"{'':<30}{metrics.reading_label(headline) + ' (headline)':<32}{metrics.reading_label(other):<32}"
    )
    columns = "".join(f"{c:>8}" for c in ("acc", "prec", "rec", "F1"))
    lines.append(f"{'subset':<24}{'n':>6}{columns}{columns}")
    for subset, s in scores["subsets"].items():
        o = other_scores.get("subsets", {}).get(subset, {})
        lines.append(
            f"{subset:<24}{s['n']:>6}"
            + "".join(f"{pct(s[k]):>8}" for k in SCORES)
            + "".join(f"{pct(o.get(k)):>8}" for k in SCORES)
        )
    average, other_average = scores["average"], other_scores.get("average", {})
    lines.append(
        f"{'average':<24}{'':>6}{pct(average['accuracy']):>8}{'':>16}{pct(average['f1']):>8}"
        f"{pct(other_average.get('accuracy')):>8}{'':>16}{pct(other_average.get('f1')):>8}"
    )
    lines.append(f"invalid {m['invalid']}, missing {m['missing']} (counted as wrong)")
    lines.append("confusion (rows truth, columns " + " / ".join(m["confusion"]["columns"]) + "):")
    for label, counts in zip(m["confusion"]["rows"], m["confusion"]["matrix"], strict=True):
        lines.append(f"  {label:>4}: " + " ".join(f"{n:>5}" for n in counts))
    return lines
