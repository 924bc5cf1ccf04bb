"""Server-rendered pages. Every page that shows sample content requires a role (common.roles)."""

from __future__ import annotations

import io
from urllib.parse import urlencode

from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET
from PIL import Image, ImageFilter

from annotation import search, selectors, services
from annotation.models import ImageAsset, Sample
from common.http import HtmxHttpRequest, parse_id, role_required

PAGE_SIZE = 50


def _get_sample_for_user(request: HtmxHttpRequest, sample_id: int) -> Sample:
    try:
        return selectors.sample_detail(sample_id=sample_id)
    except Sample.DoesNotExist:
        raise Http404("No such sample") from None


@require_GET
@role_required
def dashboard(request: HtmxHttpRequest) -> HttpResponse:
    context = {"counts": selectors.dashboard_counts(), "no_subset": selectors.NO_SUBSET}
    return render(request, "annotation/dashboard.html", context)


@require_GET
@role_required
def sample_list(request: HtmxHttpRequest) -> HttpResponse:
    filters = selectors.clean_filters(request.GET)
    searched = search.parse(request.GET.get("q"))
    sort = selectors.clean_sort(request.GET.get("sort"))
    asked = request.GET.get("page")
    page = selectors.sample_page(
        filters=filters, page_number=asked, per_page=PAGE_SIZE, search=searched, sort=sort
    )
    # What the links of this page carry: the filters, the search as it was read, and an order other than the default.
    state = dict(filters)
    if searched.text:
        state["q"] = searched.text
    if sort != selectors.DEFAULT_SORT:
        state["sort"] = sort
    context = {
        "page": page,
        "filters": filters,
        "state": state,
        "query": urlencode(state),
        "export_query": urlencode(filters),
        "searched": searched,
        "sort": sort,
        "sorts": [(key, title) for key, title, _ in selectors.SORTS],
        "page_moved": selectors.clamp_page(asked, last=page.paginator.num_pages)[1],
        "label_hidden": selectors.training_labels_hidden(request.user, [s.pk for s in page.object_list]),
        "subsets": selectors.subsets(),
        "no_subset": selectors.NO_SUBSET,
        "choices": [(key, title, choices.choices) for key, title, choices in selectors.CHOICE_FILTERS],
    }
    template = "annotation/sample_list.html"
    if request.htmx:
        template += "#results"
    return render(request, template, context)


@require_GET
@role_required
def sample_detail(request: HtmxHttpRequest, sample_id: int) -> HttpResponse:
    sample = _get_sample_for_user(request, sample_id)
    labels = list(selectors.visible_labels(sample.labels.all(), request.user))
    context = {
        "sample": sample,
        "steps": selectors.reasoning_steps(sample.thinking),
        "labels": labels,
        # Where guards locate the harm, beside the steps the experts marked as its start.
        "located": [label for label in labels if label.meta.get("located")],
        "marks": sorted({m for label in labels if (m := label.meta.get("first_harmful_step"))}),
        "training_label_hidden": bool(selectors.training_labels_hidden(request.user, [sample.pk])),
        "reveal": request.GET.get("reveal") == "1",
    }
    return render(request, "annotation/sample_detail.html", context)


@require_GET
@role_required
def sample_image_panel(request: HtmxHttpRequest, sample_id: int) -> HttpResponse:
    """The revealed image: a fragment for htmx, the whole page with the image shown otherwise."""
    sample = _get_sample_for_user(request, sample_id)
    if not request.htmx:
        return redirect(f"{reverse('sample_detail', args=[sample.pk])}?reveal=1")
    return render(request, "annotation/sample_detail.html#image", {"sample": sample, "reveal": True})


@require_GET
@role_required
def image_view(request: HtmxHttpRequest, sha256: str) -> FileResponse:
    """Image bytes for logged-in users with a role; each view is written to the audit log."""
    asset = get_object_or_404(ImageAsset, sha256=sha256)
    sample = None
    if (sample_id := parse_id(request.GET.get("sample", ""))) is not None:
        sample = Sample.objects.filter(pk=sample_id, image=asset).first()
    services.image_view_record(user=request.user, image=asset, sample=sample)
    content_type = {"JPEG": "image/jpeg"}.get(asset.format, f"image/{asset.format.lower()}")
    response = FileResponse(asset.file.open("rb"), content_type=content_type)
    # Never cached: every view goes through the audit log, and shared caches must not keep the image.
    response["Cache-Control"] = "private, no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response


PREVIEW_SIDE = 24  # pixels: enough for the shape of the image, too few to recognise what it shows


@require_GET
@role_required
def image_preview(request: HtmxHttpRequest, sha256: str) -> HttpResponse:
    """A tiny, blurred stand-in for an image that has not been revealed. Nothing in it can be recognised, so it
    is not an image view for the audit log; revealing loads the real image through `image_view`."""
    asset = get_object_or_404(ImageAsset, sha256=sha256)
    with asset.file.open("rb") as handle, Image.open(handle) as image:
        image.draft("RGB", (PREVIEW_SIDE * 4, PREVIEW_SIDE * 4))  # JPEG: decode at a reduced size
        small = image.convert("RGB")
        small.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
        small = small.filter(ImageFilter.GaussianBlur(radius=2))
        buffer = io.BytesIO()
        small.save(buffer, format="PNG")
    response = HttpResponse(buffer.getvalue(), content_type="image/png")
    response["Cache-Control"] = "private, no-store"
    return response
