"""Pages of the expert queue (labelling, adjudication, agreement) and the reviewers' disagreement inspector.

Who may do what: labelling needs the expert role; adjudication needs admin; the inspector needs reviewer or admin;
the queue overview and the agreement page any of the three roles. Expert labels of undecided items are never shown
to other experts (sample_selectors.blind_to)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import push_url

from annotation import selectors as sample_selectors
from annotation.models import Sample
from common.http import HtmxHttpRequest, roles_required
from common.roles import ADMIN, EXPERT, REVIEWER, ROLES, user_roles
from experts import agreement, selectors
from experts import services as review
from experts.forms import (
    AdjudicationForm,
    ExpertSubmitForm,
    ReliabilityDrawForm,
    ReviewDecisionForm,
    TokenForm,
    clamped,
)
from experts.models import ExpertQueueItem, ExpertSlot, Guidelines, ReviewDecision

PAGE_SIZE = 50


# --- expert labelling ---------------------------------------------------------------------------------------------


def _get_slot_for_user(request: HtmxHttpRequest, slot_id: int) -> ExpertSlot:
    """The expert's own claimed slot; anyone else's is a 404 (its existence is not confirmed)."""
    slot = (
        ExpertSlot.objects.select_related("item__sample__image")
        .filter(pk=slot_id, expert_id=request.user.pk)
        .first()
    )
    if slot is None or slot.status != ExpertSlot.Status.CLAIMED:
        raise Http404("This item is not claimed by you.")
    return slot


def _workspace(
    request: HtmxHttpRequest, slot: ExpertSlot, *, error: str = "", form: dict | None = None
) -> dict[str, Any]:
    item = slot.item
    sample = item.sample
    return {
        "slot": slot,
        "item": item,
        "sample": sample,
        "steps": sample_selectors.reasoning_steps(sample.thinking),
        "jury_shown": selectors.jury_shown(item),
        "jurors": selectors.workspace_jurors(item),
        "guidelines": Guidelines.current(),
        "progress": selectors.expert_progress(user=request.user),
        "error": error,
        "form": form or {},
    }


@require_GET
@roles_required(*ROLES)
def expert_home(request: HtmxHttpRequest) -> HttpResponse:
    roles = user_roles(request.user)
    context: dict = {"counts": selectors.expert_queue_counts(), "is_expert": EXPERT in roles}
    if EXPERT in roles:
        context["progress"] = selectors.expert_progress(user=request.user)
        context["current"] = review.expert_slot_current(user=request.user)
    if roles & {REVIEWER, ADMIN}:
        context["team"] = selectors.expert_team_progress()
    return render(request, "experts/expert_home.html", context)


def _next(request: HtmxHttpRequest, *, message: str = "", saved: int | None = None) -> HttpResponse:
    """Claim the next item: its workspace (htmx swaps it in, no page load) or a redirect to its page."""
    why = "Nothing left in the queue for you. Thank you."
    try:
        slot = review.expert_slot_claim(user=request.user)
    except review.DailyCapReached as exc:
        slot, why = None, str(exc)
    if slot is None:
        message = f"{message} {why}".strip()
        if request.htmx:
            context = {"message": message, "progress": selectors.expert_progress(user=request.user)}
            response = render(request, "experts/expert_label.html#finished", context)
            return push_url(response, reverse("expert_home"))
        messages.info(request, message)
        return redirect("expert_home")
    url = reverse("expert_slot", args=[slot.pk])
    if request.htmx:
        workspace = {**_workspace(request, slot), "message": message, "saved": saved}
        response = render(request, "experts/expert_label.html#workspace", workspace)
        return push_url(response, url)
    return redirect(url)


@require_POST
@roles_required(EXPERT)
def expert_claim(request: HtmxHttpRequest) -> HttpResponse:
    return _next(request)


@require_GET
@roles_required(EXPERT)
def expert_slot(request: HtmxHttpRequest, slot_id: int) -> HttpResponse:
    try:
        slot = _get_slot_for_user(request, slot_id)
    except Http404:
        return redirect(reverse("expert_home"))
    return render(request, "experts/expert_label.html", _workspace(request, slot))


def _submission(request: HtmxHttpRequest) -> review.ExpertSubmission:
    data = ExpertSubmitForm(request.POST).cleaned_or_raise()
    return review.ExpertSubmission(
        judgment=data["judgment"],
        analysis=data["analysis"],
        first_harmful_step=data["first_harmful_step"],
        prefilled_from=data["prefilled_from"],
    )


def _token(request: HtmxHttpRequest) -> str:
    form = TokenForm(request.POST)
    return form.cleaned_data["token"] if form.is_valid() else ""


@require_POST
@roles_required(EXPERT)
def expert_submit(request: HtmxHttpRequest, slot_id: int) -> HttpResponse:
    token = _token(request)
    try:
        submission = _submission(request)
        review.expert_label_submit(slot_id=slot_id, user=request.user, token=token, submission=submission)
    except review.ClaimLost as exc:
        return _next(request, message=str(exc))
    except review.ReviewError as exc:
        slot = _get_slot_for_user(request, slot_id)
        context = _workspace(request, slot, error=str(exc), form=request.POST.dict())
        template = "experts/expert_label.html" + ("#workspace" if request.htmx else "")
        # htmx swaps only 2xx answers: the page with the error is the answer.
        return render(request, template, context, status=200 if request.htmx else 400)
    return _next(request, message="Label saved.", saved=slot_id)


@require_POST
@roles_required(EXPERT)
def expert_skip(request: HtmxHttpRequest, slot_id: int) -> HttpResponse:
    try:
        review.expert_slot_skip(slot_id=slot_id, user=request.user, token=_token(request))
    except review.ClaimLost as exc:
        return _next(request, message=str(exc))
    return _next(request, message="Skipped.")


@require_POST
@roles_required(EXPERT)
def expert_renew(request: HtmxHttpRequest, slot_id: int) -> HttpResponse:
    try:
        until = review.expert_slot_renew(slot_id=slot_id, user=request.user, token=_token(request))
    except review.ClaimLost as exc:
        return HttpResponse(f"⚠ {exc}", status=200 if request.htmx else 409)
    return HttpResponse(
        f"Held for you until {timezone.localtime(until):%H:%M}; kept while this page is open."
    )


@require_http_methods(["GET", "POST"])
@roles_required(EXPERT)
def expert_revise(request: HtmxHttpRequest, slot_id: int) -> HttpResponse:
    """Change one's own submitted label while its item's round is open: the labelling page, filled in."""
    slot = (
        ExpertSlot.objects.select_related("item__sample__image", "label")
        .filter(pk=slot_id, expert_id=request.user.pk, status=ExpertSlot.Status.SUBMITTED)
        .first()
    )
    if slot is None or slot.label is None:
        raise Http404("You have no submitted label on this item.")
    if not slot.revisable:
        messages.warning(request, f"Item #{slot.item_id} is decided: its labels can no longer be revised.")
        return redirect("expert_home")
    label = slot.label
    form = {
        "judgment": f"{label.judgment:g}",
        "analysis": label.analysis,
        "first_harmful_step": str(label.meta.get("first_harmful_step") or ""),
    }
    error = ""
    if request.method == "POST":
        try:
            review.expert_label_revise(slot_id=slot.pk, user=request.user, submission=_submission(request))
        except review.ReviewError as exc:
            error, form = str(exc), request.POST.dict()
        else:
            messages.success(request, f"Your label on item #{slot.item_id} is revised.")
            return redirect("expert_home")
    context = {**_workspace(request, slot, error=error, form=form), "revising": True}
    return render(request, "experts/expert_label.html", context, status=400 if error else 200)


# --- adjudication and agreement -----------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@roles_required(ADMIN)
def adjudication(request: HtmxHttpRequest) -> HttpResponse:
    error, decided = "", None
    if request.method == "POST":
        item_id = request.POST.get("item", "")  # named in the error as it was sent
        try:
            data = AdjudicationForm(request.POST).cleaned_or_raise()
            decided = review.expert_item_adjudicate(
                item_id=data["item"],
                user=request.user,
                judgment=data["judgment"],
                analysis=data["analysis"],
                note=data["note"],
            )
        except review.ReviewError as exc:
            error = f"Item #{item_id}: {exc}"
    context = {"items": selectors.adjudication_items(), "error": error, "decided": decided}
    return render(request, "experts/adjudication.html", context, status=400 if error else 200)


@require_GET
@roles_required(*ROLES)
def agreement_page(request: HtmxHttpRequest) -> HttpResponse:
    n = clamped(request.GET.get("n"), 150, 1, 100_000)
    seed = clamped(request.GET.get("seed"), 0, 0, 2**31)
    context = {
        "report": agreement.agreement_report(n=n, seed=seed),
        "n": n,
        "seed": seed,
        "can_draw": bool(user_roles(request.user) & {REVIEWER, ADMIN}),
    }
    return render(request, "experts/agreement.html", context)


@require_POST
@roles_required(REVIEWER, ADMIN)
def reliability_draw(request: HtmxHttpRequest) -> HttpResponse:
    try:
        n, seed = ReliabilityDrawForm(request.POST).draw()
        sent = review.expert_reliability_draw(n=n, seed=seed, user=request.user)
        messages.success(
            request, f"Sent {sent} jury-labelled samples to the expert queue for the reliability check."
        )
    except review.ReviewError as exc:
        messages.warning(request, str(exc))
    return redirect("agreement")


# --- disagreement inspector ---------------------------------------------------------------------------------------


def _guard_name(request: HtmxHttpRequest) -> str | None:
    names = selectors.guard_names()
    wanted = request.GET.get("guard") or request.POST.get("guard") or ""
    return wanted if wanted in names else selectors.active_guard_name()


@require_GET
@roles_required(REVIEWER, ADMIN)
def disagreement_list(request: HtmxHttpRequest) -> HttpResponse:
    guard = _guard_name(request)
    filters = selectors.clean_disagreement_filters(request.GET)
    context: dict[str, object] = {
        "guard": guard,
        "guards": selectors.guard_names(),
        "filters": filters,
        "query": _triage_query(guard, filters),
        # The same view on the judgment basis (offered where the threshold basis has no threshold).
        "judgment_query": _triage_query(guard, {k: v for k, v in filters.items() if k != "basis"}),
        "subsets": sample_selectors.subsets(),
        "choices": [
            (k, t, c.choices) for k, t, c in sample_selectors.CHOICE_FILTERS if k in ("category", "stratum")
        ],
        "directions": selectors.DIRECTIONS,
        "triage": selectors.TRIAGE,
        "bases": selectors.BASES,
    }
    if guard:
        context["basis"] = selectors.disagreement_basis(guard_name=guard, filters=filters, params=request.GET)
        context["page"] = selectors.disagreement_page(
            guard_name=guard, filters=filters, page_number=request.GET.get("page"), per_page=PAGE_SIZE
        )
    template = "experts/disagreement_list.html" + ("#results" if request.htmx else "")
    return render(request, template, context)


def _triage_query(guard: str | None, filters: dict[str, str]) -> str:
    """The list's filters (and the guard) carried from call to call, so the loop stays in the reviewer's view."""
    return urlencode({**filters, **({"guard": guard} if guard else {})})


def _disagreement_url(sample_id: int, query: str) -> str:
    return f"{reverse('disagreement', args=[sample_id])}?{query}"


@require_http_methods(["GET", "POST"])
@roles_required(REVIEWER, ADMIN)
def disagreement_detail(request: HtmxHttpRequest, sample_id: int) -> HttpResponse:
    """One disagreement, in the triage loop: a call (on keys 1 / 2 / 3) is recorded and the next disagreement
    under the same filters opens; the last call can be undone from there."""
    guard = _guard_name(request)
    filters = selectors.clean_disagreement_filters(request.GET)
    query = _triage_query(guard, filters)
    sample = get_object_or_404(Sample.objects.select_related("image"), pk=sample_id)
    error = ""
    if request.method == "POST":
        if guard is None:
            raise Http404("No guard checkpoint")
        try:
            data = ReviewDecisionForm(request.POST).cleaned_or_raise()
            decision = review.review_decision_record(
                sample=sample, guard_name=guard, verdict=data["verdict"], user=request.user, note=data["note"]
            )
        except review.ReviewError as exc:
            error = str(exc)
        else:
            place = selectors.disagreement_place(guard_name=guard, filters=filters, sample_id=sample.pk)
            messages.success(request, f"Recorded on sample #{sample.pk}: {decision.get_verdict_display()}.")
            if place["next"] is None:
                messages.info(request, "That was the last disagreement under these filters.")
                return redirect(f"{reverse('disagreement_list')}?{query}")
            return redirect(_disagreement_url(place["next"], query))
    labels = list(sample.labels.order_by("source_kind", "source_name", "id"))
    item = ExpertQueueItem.objects.filter(sample=sample).first()
    context = {
        "sample": sample,
        "guard": guard,
        "query": query,
        "place": selectors.disagreement_place(guard_name=guard, filters=filters, sample_id=sample.pk)
        if guard
        else None,
        "last_call": selectors.last_call(user=request.user),
        "steps": sample_selectors.reasoning_steps(sample.thinking),
        "guard_labels": [lab for lab in labels if lab.source_kind == "guard" and lab.source_name == guard],
        "jurors": [lab for lab in labels if lab.source_kind == "juror"],
        "experts": [lab for lab in labels if lab.source_kind == "expert"],
        "marks": sorted({m for lab in labels if (m := lab.meta.get("first_harmful_step"))}),
        "threshold": selectors.guard_threshold(guard) if guard else None,
        "item": item,
        "decisions": ReviewDecision.objects.filter(sample=sample).select_related("reviewer"),
        "verdicts": ReviewDecision.Verdict.choices,
        "error": error,
    }
    return render(request, "experts/disagreement_detail.html", context, status=400 if error else 200)


@require_POST
@roles_required(REVIEWER, ADMIN)
def disagreement_undo(request: HtmxHttpRequest, decision_id: int) -> HttpResponse:
    """Undo the reviewer's last call and go back to its sample, filters kept."""
    query = request.POST.get("query", "")
    try:
        decision = review.review_decision_undo(decision_id=decision_id, user=request.user)
    except review.ReviewError as exc:
        messages.warning(request, str(exc))
        return redirect(f"{reverse('disagreement_list')}?{query}")
    messages.success(request, f"Undone: {decision.get_verdict_display()} on sample #{decision.sample_id}.")
    return redirect(_disagreement_url(decision.sample_id, query))
