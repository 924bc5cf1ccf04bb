"""Pages for building QTA data: seed sets, and a seed set's expansion preview (each seed with its variants)."""

from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Count, Prefetch
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from common.http import HtmxHttpRequest, role_required, roles_required
from common.roles import ADMIN
from generation import runs, services
from generation.forms import SeedAttachForm
from generation.models import Expansion, GenerationRun, GenerationTask, SeedQuery, SeedSet, Variant

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
    """The expansion preview: each seed with the variants made from it, images blurred until revealed; the set's
    queued and recent expansions with their progress (live while one is going)."""
    seed_set = get_object_or_404(SeedSet, pk=set_id)
    expansions = list(Expansion.objects.filter(seed_sets=seed_set).select_related("created_by")[:5])
    live = any(not expansion.finished for expansion in expansions)
    if request.htmx and request.GET.get("part") == "expansions":
        return render(request, "generation/seed_set.html#expansions",
                      {"seed_set": seed_set, "expansions": expansions, "live": live})  # fmt: skip
    queries = SeedQuery.objects.filter(seed_set=seed_set).prefetch_related(
        Prefetch("variants", queryset=Variant.objects.select_related("image").order_by("kind", "id"))
    )
    page = Paginator(queries, PAGE).get_page(request.GET.get("page"))
    has_images = Variant.objects.filter(seed__seed_set=seed_set, image__isnull=False).exists()
    context = {
        "seed_set": seed_set,
        "page": page,
        "expansions": expansions,
        "live": live,
        "has_images": has_images,
    }
    return render(request, "generation/seed_set.html", context)


@require_POST
@roles_required(ADMIN)
def seed_attach(request: HtmxHttpRequest, seed_id: int):
    """An aligned image attached by hand to a seed (admins): it becomes an aligned-image variant of the seed."""
    seed = get_object_or_404(SeedQuery, pk=seed_id)
    form = SeedAttachForm(request.POST, request.FILES)
    valid = form.is_valid()
    page = form.cleaned_data.get("page", 1)
    back = reverse("seed_set", args=[seed.seed_set_id]) + f"?page={page}#seed-{seed.pk}"
    if not valid:
        messages.error(request, f"seed #{seed.pk}: {form.first_error()}")
        return redirect(back)
    upload = form.cleaned_data["image"]
    try:
        variant = services.variant_attach(seed=seed, data=upload.read(), text=form.cleaned_data["text"],
                                          user=request.user)  # fmt: skip
    except services.ExpansionError as exc:
        messages.error(request, f"seed #{seed.pk}: {upload.name}: {exc}")
    else:
        messages.success(
            request, f"seed #{seed.pk}: {upload.name} attached as aligned-image variant #{variant.pk}"
        )
    return redirect(back)


@require_GET
@role_required
def run_list(request: HtmxHttpRequest):
    runs_ = list(GenerationRun.objects.prefetch_related("generators")[:100])
    progress = runs.runs_progress([run.pk for run in runs_])
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
    context = {"run": run, "progress": runs.run_progress(run), "per_generator": per_generator, "usage": usage,
               "failures": failures}  # fmt: skip
    if request.GET.get("format") == "json":
        return JsonResponse({"status": run.status, "total": run.total, "progress": context["progress"],
                             "per_generator": per_generator, "usage": usage})  # fmt: skip
    template = "generation/run_detail.html#live" if request.htmx else "generation/run_detail.html"
    return render(request, template, context)


@require_POST
@roles_required(ADMIN)
def run_cancel(request: HtmxHttpRequest, run_id: int):
    """Stop asking the run's replies (admins); calls in flight finish and their samples are kept."""
    run = get_object_or_404(GenerationRun, pk=run_id)
    if runs.generation_run_cancel(run=run):
        messages.info(request, f"{run} cancelled; replies in flight finish and are kept.")
    else:
        messages.error(request, f"{run} is not running.")
    return redirect("generation_run", run_id=run.pk)


@require_POST
@roles_required(ADMIN)
def run_resume(request: HtmxHttpRequest, run_id: int):
    """Ask a cancelled run's remaining replies (admins); what was made is not asked again."""
    run = get_object_or_404(GenerationRun, pk=run_id)
    if runs.generation_run_resume(run=run):
        messages.info(request, f"{run} resumed; replies already made are not asked again.")
    else:
        messages.error(request, f"{run} has finished: nothing is left to ask.")
    return redirect("generation_run", run_id=run.pk)
