"""Pages for guard jobs and evaluations. Metrics and counts only: no sample content, but still role-gated."""

from __future__ import annotations

from django.http import HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from annotation.views import HtmxHttpRequest, role_required
from guardmodel import services
from guardmodel.models import Evaluation, GuardJob

CHART_WIDTH = 560
BAR_HEIGHT = 14


def pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def comparison_table(evaluations: list[Evaluation]) -> dict:
    """The paper's main-table shape: rows = sources, columns = F1 per subset, then average accuracy and F1."""
    subsets: list[str] = []
    for evaluation in evaluations:
        subsets.extend(s for s in evaluation.subsets if s not in subsets)
    rows = []
    for evaluation in evaluations:
        per_subset = evaluation.metrics.get("subsets", {})
        average = evaluation.metrics.get("average", {})
        rows.append(
            {
                "evaluation": evaluation,
                "f1": [pct(per_subset[s]["f1"]) if s in per_subset else "" for s in subsets],
                "accuracy": pct(average.get("accuracy")),
                "average_f1": pct(average.get("f1")),
                "unanswered": evaluation.metrics.get("invalid", 0) + evaluation.metrics.get("missing", 0),
                "bar_f1": round(CHART_WIDTH * (average.get("f1") or 0)),
                "bar_accuracy": round(CHART_WIDTH * (average.get("accuracy") or 0)),
            }
        )
    for index, row in enumerate(rows):
        row["y"] = index * (3 * BAR_HEIGHT + 8)
    return {"subsets": subsets, "rows": rows, "chart_height": max(1, len(rows)) * (3 * BAR_HEIGHT + 8)}


@require_GET
@role_required
def evaluation_list(request: HtmxHttpRequest) -> HttpResponse:
    chosen = [int(v) for v in request.GET.getlist("id") if v.isdigit()]
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
    subsets = [
        (name, s, {k: pct(s[k]) for k in ("accuracy", "precision", "recall", "f1")})
        for name, s in m["subsets"].items()
    ]
    categories = [(name, s, pct(s["f1"])) for name, s in m["categories"].items()]
    confusion = list(zip(m["confusion"]["rows"], m["confusion"]["matrix"], strict=True))
    overall = {k: pct(m["overall"][k]) for k in ("accuracy", "precision", "recall", "f1")}
    return render(
        request,
        "guardmodel/evaluation_detail.html",
        {"evaluation": evaluation, "subsets": subsets, "categories": categories, "confusion": confusion,
         "columns": m["confusion"]["columns"], "overall": overall, "average": {k: pct(v) for k, v in m["average"].items()}},
    )  # fmt: skip


@require_GET
@role_required
def guard_job(request: HtmxHttpRequest, job_id: int) -> HttpResponse:
    job = get_object_or_404(GuardJob.objects.select_related("checkpoint"), pk=job_id)
    template = "guardmodel/guard_job.html#progress" if request.htmx else "guardmodel/guard_job.html"
    return render(request, template, {"job": job})
