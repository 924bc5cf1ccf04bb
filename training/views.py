"""Pages for training rounds: the run list, a run's live progress with its curves and evaluation, a checkpoint's
lineage, and a snapshot with its mining report. Figures and ids only, no sample content; still role-gated."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from common.http import HtmxHttpRequest, role_required, roles_required
from common.roles import ADMIN, is_admin
from guardmodel.models import GuardCheckpoint
from guardmodel.services import checkpoint_activate
from guardmodel.views import comparison_table
from qta.hyper import Hyperparameters
from training import selectors, services
from training.models import DatasetSnapshot, TrainingRun


@require_GET
@role_required
def run_list(request: HtmxHttpRequest) -> HttpResponse:
    runs = TrainingRun.objects.select_related(
        "snapshot", "evaluation", "created_by", "base_checkpoint"
    ).select_related("output_checkpoint")[:200]
    return render(request, "training/run_list.html", {"runs": runs, "is_admin": is_admin(request.user)})


def _progress(run: TrainingRun) -> dict:
    return {
        "status": run.status, "status_label": run.get_status_display(), "phase": run.phase, "step": run.step,
        "max_steps": run.max_steps, "epoch": run.epoch, "loss": run.loss, "reward_margin": run.reward_margin,
        "reward_accuracy": run.reward_accuracy, "samples_per_second": run.samples_per_second,
        "finished": run.finished, "stale": services.is_stale(run), "history": run.history,
        "truncation": run.truncation, "elapsed_seconds": selectors.run_elapsed(run),
        "eta_seconds": selectors.run_eta(run),
    }  # fmt: skip


@require_GET
@role_required
def run_detail(request: HtmxHttpRequest, run_id: int) -> HttpResponse:
    run = get_object_or_404(
        TrainingRun.objects.select_related("snapshot", "evaluation", "parent", "base_checkpoint",
                                           "reference_checkpoint"), pk=run_id)  # fmt: skip
    if request.GET.get("format") == "json":
        return JsonResponse(_progress(run))
    reasons = Hyperparameters.reasons()
    progress = _progress(run)
    context = {
        "run": run, "progress": progress, "is_admin": is_admin(request.user), "stale": progress["stale"],
        "elapsed": selectors.duration_text(progress["elapsed_seconds"]),
        "eta": selectors.duration_text(progress["eta_seconds"]),
        "hyperparameters": [(k, v, reasons.get(k, "")) for k, v in run.hyperparameters.items()],
        "table": comparison_table([run.evaluation]) if run.evaluation else None,
        "checkpoint": run.output_checkpoint,
    }  # fmt: skip
    template = "training/run_detail.html#live" if request.htmx else "training/run_detail.html"
    return render(request, template, context)


@require_POST
@roles_required(ADMIN)
def run_cancel(request: HtmxHttpRequest, run_id: int) -> HttpResponse:
    run = get_object_or_404(TrainingRun, pk=run_id)
    done = services.training_run_cancel(run)
    messages.info(request, "Cancelled." if done else f"{run} is not queued or running.")
    return redirect("training_run", run_id=run.pk)


@require_POST
@roles_required(ADMIN)
def run_resume(request: HtmxHttpRequest, run_id: int) -> HttpResponse:
    run = get_object_or_404(TrainingRun, pk=run_id)
    try:
        services.training_run_resume(run)
    except services.TrainingError as exc:
        messages.error(request, str(exc))
    else:
        messages.info(request, "Queued again: it continues from its last saved checkpoint.")
    return redirect("training_run", run_id=run.pk)


@require_POST
@roles_required(ADMIN)
def run_activate(request: HtmxHttpRequest, run_id: int) -> HttpResponse:
    run = get_object_or_404(TrainingRun, pk=run_id)
    if run.output_checkpoint is None:
        messages.error(request, f"{run} made no checkpoint to activate")
    else:
        checkpoint_activate(run.output_checkpoint)
        messages.info(request, f"{run.output_checkpoint} is now the active guard.")
    return redirect("training_run", run_id=run.pk)


def lineage(checkpoint: GuardCheckpoint) -> list[dict]:
    """From the base model to this checkpoint: each checkpoint with the round that made it."""
    chain, seen = [], set()
    current: GuardCheckpoint | None = checkpoint
    while current is not None and current.pk not in seen:
        seen.add(current.pk)
        run = TrainingRun.objects.filter(output_checkpoint=current).select_related("base_checkpoint").first()
        chain.append({"checkpoint": current, "run": run})
        current = run.base_checkpoint if run is not None else None
    return list(reversed(chain))


@require_GET
@role_required
def checkpoint_lineage(request: HtmxHttpRequest, checkpoint_id: int) -> HttpResponse:
    checkpoint = get_object_or_404(GuardCheckpoint, pk=checkpoint_id)
    chain = lineage(checkpoint)
    evaluations = [step["run"].evaluation for step in chain if step["run"] and step["run"].evaluation]
    return render(request, "training/lineage.html", {"checkpoint": checkpoint, "chain": chain,
                                                      "table": comparison_table(evaluations) if evaluations else None})  # fmt: skip


@require_GET
@role_required
def snapshot_detail(request: HtmxHttpRequest, snapshot_id: int) -> HttpResponse:
    snapshot = get_object_or_404(DatasetSnapshot, pk=snapshot_id)
    mined = snapshot.manifest.get("mined", [])
    return render(request, "training/snapshot_detail.html", {"snapshot": snapshot, "mining": snapshot.manifest.get("mining"),
                                                              "mined": mined[:500], "mined_total": len(mined)})  # fmt: skip
