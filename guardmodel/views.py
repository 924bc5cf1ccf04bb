"""Pages for guard jobs and evaluations. Metrics and counts only: no sample content, but still role-gated."""

from __future__ import annotations

import math

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from common.http import HtmxHttpRequest, parse_ids, role_required, roles_required
from common.roles import ADMIN
from guardmodel import services
from guardmodel.api import AuditInputSerializer, judge
from guardmodel.models import Evaluation, GuardCheckpoint, GuardJob
from qta import metrics

CHART_WIDTH = 560
BAR_HEIGHT = 14
SCORES = ("accuracy", "precision", "recall", "f1")


def pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def readings(evaluation: Evaluation) -> list[dict]:
    """Both binary readings of an evaluation, the headline first, each labelled ("0.5 → harmful") and with its
    average accuracy and F1 as percentages; an evaluation stored before both were kept shows "—" for the other."""
    shown = []
    for half_as, scores in metrics.stored_readings(evaluation.metrics):
        average = (scores or {}).get("average", {})
        shown.append(
            {
                "half_as": half_as,
                "label": metrics.reading_label(half_as),
                "scores": scores,
                "accuracy": pct(average.get("accuracy")),
                "f1": pct(average.get("f1")),
                "accuracy_value": average.get("accuracy"),
                "f1_value": average.get("f1"),
            }
        )
    return shown


def comparison_table(evaluations: list[Evaluation]) -> dict:
    """The paper's main-table shape: rows = sources, columns = F1 per subset, then average accuracy and F1 (the
    headline reading, named in its own column), then the other reading's average accuracy and F1."""
    subsets: list[str] = []
    for evaluation in evaluations:
        subsets.extend(s for s in evaluation.subsets if s not in subsets)
    rows = []
    for evaluation in evaluations:
        headline, other = readings(evaluation)
        per_subset = headline["scores"].get("subsets", {})
        rows.append(
            {
                "evaluation": evaluation,
                "headline": headline,
                "other": other,
                "f1": [pct(per_subset[s]["f1"]) if s in per_subset else "" for s in subsets],
                "accuracy": headline["accuracy"],
                "average_f1": headline["f1"],
                "unanswered": evaluation.metrics.get("invalid", 0) + evaluation.metrics.get("missing", 0),
                "bar_f1": round(CHART_WIDTH * (headline["f1_value"] or 0)),
                "bar_accuracy": round(CHART_WIDTH * (headline["accuracy_value"] or 0)),
                "bar_other_f1": None if other["f1_value"] is None else round(CHART_WIDTH * other["f1_value"]),
            }
        )
    for index, row in enumerate(rows):
        row["y"] = index * (3 * BAR_HEIGHT + 8)
    return {"subsets": subsets, "rows": rows, "chart_height": max(1, len(rows)) * (3 * BAR_HEIGHT + 8)}


@require_GET
@role_required
def evaluation_list(request: HtmxHttpRequest) -> HttpResponse:
    chosen = parse_ids(request.GET.getlist("id"))
    evaluations = (
        list(Evaluation.objects.filter(pk__in=chosen).order_by("-created_at"))
        if chosen
        else services.evaluations_latest()
    )
    context = {
        "table": comparison_table(evaluations),
        "all_evaluations": Evaluation.objects.defer("metrics").order_by("-created_at")[:100],
        "chosen": {e.pk for e in evaluations},
        "chart_width": CHART_WIDTH,
        "bar_height": BAR_HEIGHT,
    }
    return render(request, "guardmodel/evaluation_list.html", context)


@require_GET
@role_required
def evaluation_detail(request: HtmxHttpRequest, evaluation_id: int) -> HttpResponse:
    evaluation = get_object_or_404(Evaluation, pk=evaluation_id)
    m = evaluation.metrics
    shown = readings(evaluation)
    for reading in shown:
        scores = reading["scores"] or {}
        reading["overall"] = {k: pct(scores.get("overall", {}).get(k)) for k in SCORES}
    headline, other = (r["scores"] or {} for r in shown)
    other_subsets, other_categories = other.get("subsets", {}), other.get("categories", {})
    # One row per subset (category): the headline reading's scores and counts, then the other reading's scores.
    subsets = [
        (
            name,
            s,
            {k: pct(s[k]) for k in SCORES},
            {k: pct(other_subsets.get(name, {}).get(k)) for k in SCORES},
        )
        for name, s in headline["subsets"].items()
    ]
    categories = [
        (name, s, pct(s["f1"]), pct(other_categories.get(name, {}).get("f1")))
        for name, s in headline["categories"].items()
    ]
    confusion = list(zip(m["confusion"]["rows"], m["confusion"]["matrix"], strict=True))
    risk = _risk_view(m.get("scores"), request.GET)
    if risk is not None:
        risk["checkpoint_threshold"] = (
            GuardCheckpoint.objects.filter(name=evaluation.source_name)
            .values_list("threshold", flat=True)
            .first()
        )
    context = {
        "evaluation": evaluation,
        "readings": shown,
        "subsets": subsets,
        "categories": categories,
        "confusion": confusion,
        "columns": m["confusion"]["columns"],
        "risk": risk,
        "localisation": m.get("localisation"),
    }
    return render(request, "guardmodel/evaluation_detail.html", context)


CURVE_SIDE = 180  # pixels: the reliability, ROC and precision–recall charts are squares


def _polyline(points) -> str:
    """Points in [0, 1]² as an SVG polyline's coordinates, y upwards."""
    return " ".join(f"{x * CURVE_SIDE:.1f},{(1 - y) * CURVE_SIDE:.1f}" for x, y in points)


def _risk_view(scores: dict | None, params) -> dict | None:
    """The evaluation's risk-score figures for the page: the measures, the three charts, and the threshold that
    meets a target precision or recall the reader asks for (`?target=precision&value=0.9`)."""
    if not scores:
        return None
    bins = [b for b in scores["reliability"] if b["n"]]
    view = {
        "n": scores["n"],
        "reading": metrics.reading_label(scores["reading"]),
        "ece": f"{scores['ece']:.3f}",
        "auroc": "—" if scores["auroc"] is None else f"{scores['auroc']:.3f}",
        "auprc": "—" if scores["auprc"] is None else f"{scores['auprc']:.3f}",
        "bins": scores["reliability"],
        "side": CURVE_SIDE,
        "reliability_line": _polyline((b["mean_score"], b["harmful_rate"]) for b in bins),
        "roc_line": _polyline(scores["roc"]),
        "pr_line": _polyline(scores["pr"]),
        "target": params.get("target") if params.get("target") in ("precision", "recall") else "precision",
        "value": clamped_fraction(params.get("value"), 0.9),
    }
    meeting = [
        (threshold, precision, recall)
        for threshold, (recall, precision) in zip(scores["thresholds"], scores["pr"], strict=True)
        if (precision if view["target"] == "precision" else recall) >= view["value"]
    ]
    if meeting:
        pick = (
            max(meeting, key=lambda c: (c[2], -c[0]))
            if view["target"] == "precision"
            else max(meeting, key=lambda c: c[0])
        )
        view["chosen"] = {"threshold": f"{pick[0]:.3f}", "precision": pct(pick[1]), "recall": pct(pick[2])}
    return view


def clamped_fraction(value: str | None, default: float) -> float:
    """A fraction typed in a form, clamped to [0, 1]; `default` when it is not a number."""
    number = _number(value)
    return default if number is None else min(1.0, max(0.0, number))


@require_GET
@role_required
def guard_job(request: HtmxHttpRequest, job_id: int) -> HttpResponse:
    job = get_object_or_404(GuardJob.objects.select_related("checkpoint"), pk=job_id)
    template = "guardmodel/guard_job.html#progress" if request.htmx else "guardmodel/guard_job.html"
    return render(request, template, {"job": job})


@require_POST
@roles_required(ADMIN)
def evaluation_threshold(request: HtmxHttpRequest, evaluation_id: int) -> HttpResponse:
    """Keep the threshold chosen on an evaluation's page as its guard checkpoint's: the audit API flags from it."""
    evaluation = get_object_or_404(Evaluation, pk=evaluation_id)
    back = f"{reverse('evaluation_detail', args=[evaluation.pk])}#risk-scores"
    checkpoint = (
        GuardCheckpoint.objects.filter(name=evaluation.source_name).first()
        if evaluation.source_kind == Evaluation.SourceKind.GUARD and evaluation.source_name
        else None
    )
    if checkpoint is None:
        messages.error(
            request, "This evaluation is not of a registered guard checkpoint: no threshold was kept."
        )
        return redirect(back)
    value = _number(request.POST.get("threshold"))
    if value is None or not 0 < value <= 1:
        messages.error(
            request, f"threshold: {request.POST.get('threshold', '')!r} is not a probability above 0"
        )
        return redirect(back)
    checkpoint.threshold = value
    checkpoint.save(update_fields=["threshold"])
    messages.success(request, f"{checkpoint.name} now flags from P(harmful) ≥ {value:g} in the audit API.")
    return redirect(back)


def _number(text: str | None) -> float | None:
    """A finite number typed in a form, or None."""
    try:
        number = float(text) if text else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None


@require_http_methods(["GET", "POST"])
@role_required
def guard_playground(request: HtmxHttpRequest) -> HttpResponse:
    """Try a checkpoint on an input of one's own: question, reasoning, answer and an image in, the guard's analysis
    and judgment out, as the audit API answers. Nothing entered here is stored."""
    context: dict[str, object] = {
        "checkpoints": GuardCheckpoint.objects.order_by("-is_active", "name"),
        "form": {},
        "errors": {},
    }
    code = 200
    if request.method == "POST":
        data: dict[str, object] = {
            key: request.POST.get(key, "") for key in ("question", "thinking", "answer", "checkpoint")
        }
        data["locate"] = bool(request.POST.get("locate"))  # a checkbox: sent when ticked
        if request.FILES.get("image"):
            data["image"] = request.FILES["image"]
        context["form"] = {k: v for k, v in data.items() if k != "image"}
        serializer = AuditInputSerializer(data=data)
        if serializer.is_valid():
            code, body = judge(serializer.validated_data)
            context["result" if code == 200 else "failure"] = body
        else:
            code = 400
            context["errors"] = {
                field: " ".join(str(m) for m in messages) for field, messages in serializer.errors.items()
            }
    return render(request, "guardmodel/playground.html", context, status=code)
