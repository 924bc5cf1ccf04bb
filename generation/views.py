"""Pages for building QTA data: seed sets, and a seed set's expansion preview (each seed with its variants)."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.db.models import Count, Prefetch
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from annotation.views import HtmxHttpRequest, role_required
from generation.models import SeedQuery, SeedSet, Variant

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
