"""Pages for building QTA data: seed sets, and a seed set's expansion preview (each seed with its variants)."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.db.models import Count, Prefetch
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from annotation.views import HtmxHttpRequest, role_required
from generation.models import GenerationRun, GenerationTask, SeedQuery, SeedSet, Variant
from generation.runs import run_progress, runs_progress

PAGE = 50


@require_GET
@role_required
def seed_sets(request: HtmxHttpRequest):
    sets = SeedSet.objects.annotate(
        n_queries=Count("queries", distinct=True), n_variants=Count("queries__variants", distinct=True)
    )
    return render(request, "generation/seed_sets.html", {"sets": sets})


@require_GET
@role_required
def seed_set(request: HtmxHttpRequest, set_id: int):
    """The expansion preview: each seed with the variants made from it, images blurred until revealed."""
    seed_set = get_object_or_404(SeedSet, pk=set_id)
    queries = SeedQuery.objects.filter(seed_set=seed_set).prefetch_related(
        Prefetch("variants", queryset=Variant.objects.select_related("image").order_by("kind", "id"))
    )
    page = Paginator(queries, PAGE).get_page(request.GET.get("page"))
    return render(request, "generation/seed_set.html", {"seed_set": seed_set, "page": page})


@require_GET
@role_required
def run_list(request: HtmxHttpRequest):
    runs_ = list(GenerationRun.objects.prefetch_related("generators")[:100])
    progress = runs_progress([run.pk for run in runs_])
    return render(request, "generation/run_list.html", {"runs": [(run, progress[run.pk]) for run in runs_]})


@require_GET
@role_required
def run_detail(request: HtmxHttpRequest, run_id: int):
    """A run's progress per generator (live: the page refreshes its table while the run is going)."""
    run = get_object_or_404(GenerationRun, pk=run_id)
    per_generator: dict[str, dict[str, int]] = {}
    for row in (
        GenerationTask.objects.filter(run=run).values("generator__name", "status").annotate(n=Count("id"))
    ):
        per_generator.setdefault(row["generator__name"], dict.fromkeys(GenerationTask.Status.values, 0))[
            row["status"]
        ] = row["n"]
    tokens = GenerationTask.objects.filter(run=run).exclude(usage={}).values_list("usage", flat=True)
    usage = {"prompt_tokens": 0, "completion_tokens": 0}
    for item in tokens:
        for key in usage:
            usage[key] += int(item.get(key) or 0)
    failures = GenerationTask.objects.filter(run=run, status="failed").select_related("generator")[:20]
    context = {"run": run, "progress": run_progress(run), "per_generator": per_generator, "usage": usage,
               "failures": failures}  # fmt: skip
    if request.GET.get("format") == "json":
        return JsonResponse({"status": run.status, "total": run.total, "progress": context["progress"],
                             "per_generator": per_generator, "usage": usage})  # fmt: skip
    template = "generation/run_detail.html#live" if request.htmx else "generation/run_detail.html"
    return render(request, template, context)
