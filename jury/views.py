"""Jury run pages: the list, and one run's progress per juror (htmx polling while it runs). Counts only, no
sample content; still role-gated. Cancel and resume are for admins."""

from __future__ import annotations

from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from common.http import HtmxHttpRequest, role_required, roles_required
from common.roles import ADMIN, is_admin
from jury import services
from jury.models import JuryRun


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def progress_context(run: JuryRun) -> dict:
    jurors = services.run_progress(run)
    etas = [p.eta_s for p in jurors]
    return {
        "run": run,
        "jurors": [{"p": p, "eta": duration(p.eta_s), "per_second": f"{p.per_second:.1f}"} for p in jurors],
        "per_second": f"{sum(p.per_second for p in jurors):.1f}",
        "eta": "—"
        if any(e is None for e in etas)
        else duration(max((e for e in etas if e is not None), default=0.0)),
        "done": sum(p.done for p in jurors),
        "total": sum(p.total for p in jurors),
        "percent": int(100 * sum(p.done for p in jurors) / max(1, sum(p.total for p in jurors))),
        "workers": services.run_workers(run),
    }


@require_GET
@role_required
def run_list(request: HtmxHttpRequest) -> HttpResponse:
    runs = JuryRun.objects.select_related("created_by").prefetch_related("jurors")[:100]
    return render(request, "jury/run_list.html", {"runs": runs, "jurors": services.sitting_jurors()})


@require_GET
@role_required
def run_detail(request: HtmxHttpRequest, run_id: int) -> HttpResponse:
    run = get_object_or_404(JuryRun, pk=run_id)
    template = "jury/run_detail.html#progress" if request.htmx else "jury/run_detail.html"
    return render(request, template, {**progress_context(run), "can_manage": is_admin(request.user)})


@require_POST
@roles_required(ADMIN)
def run_cancel(request: HtmxHttpRequest, run_id: int) -> HttpResponse:
    services.jury_run_cancel(get_object_or_404(JuryRun, pk=run_id))
    return redirect("jury_run", run_id=run_id)


@require_POST
@roles_required(ADMIN)
def run_resume(request: HtmxHttpRequest, run_id: int) -> HttpResponse:
    services.jury_run_resume(get_object_or_404(JuryRun, pk=run_id))
    return redirect("jury_run", run_id=run_id)
