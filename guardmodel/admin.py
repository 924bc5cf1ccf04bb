from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.html import format_html

from annotation.models import Sample
from guardmodel import services
from guardmodel.loading import CheckpointError, check_checkpoint_dir, is_local
from guardmodel.models import Evaluation, GuardCheckpoint, GuardJob


@admin.register(GuardCheckpoint)
class GuardCheckpointAdmin(admin.ModelAdmin):
    list_display = ["name", "is_active", "path", "endpoint", "base_model", "produced_by", "created_at"]
    list_filter = ["is_active"]
    raw_id_fields = ["produced_by"]
    readonly_fields = ["is_active"]
    actions = ["make_active", "judge_test_subsets"]

    def save_model(self, request, obj, form, change):
        if obj.path and is_local(obj.path):
            from pathlib import Path

            try:
                check_checkpoint_dir(Path(obj.path).expanduser())
            except CheckpointError as exc:
                messages.warning(request, f"{obj.name}: {exc}")
        super().save_model(request, obj, form, change)

    @admin.action(description="Make the selected checkpoint the active guard")
    def make_active(self, request, queryset: QuerySet[GuardCheckpoint]):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one checkpoint to activate.", messages.ERROR)
            return
        checkpoint = queryset.get()
        services.checkpoint_activate(checkpoint)
        self.message_user(request, f"{checkpoint} is now the active guard.")

    @admin.action(description="Judge the test subsets and evaluate")
    def judge_test_subsets(self, request, queryset: QuerySet[GuardCheckpoint]):
        subsets = services.test_subsets()
        if not subsets:
            self.message_user(request, "There are no test samples (split=test) to judge.", messages.ERROR)
            return
        ids = list(Sample.objects.filter(subset__in=subsets).values_list("pk", flat=True))
        for checkpoint in queryset:
            job = services.guard_job_create(
                checkpoint=checkpoint, sample_ids=ids, user=request.user, evaluate_subsets=subsets
            )
            self.message_user(request, f"{job} queued: {len(ids)} samples in {', '.join(subsets)}.")
        return redirect("admin:guardmodel_guardjob_changelist")


def judge_samples_action(modeladmin, request, queryset: QuerySet[Sample]):
    """Sample admin action: pick a checkpoint on an intermediate page, then queue a guard job."""
    checkpoints = GuardCheckpoint.objects.all()
    if request.POST.get("apply"):
        checkpoint = checkpoints.filter(pk=request.POST.get("checkpoint") or 0).first()
        if checkpoint is None:
            modeladmin.message_user(request, "Choose a checkpoint.", messages.ERROR)
        else:
            job = services.guard_job_create(
                checkpoint=checkpoint, sample_ids=queryset.values_list("pk", flat=True), user=request.user
            )
            modeladmin.message_user(request, f"{job} queued for {job.total} samples.")
            return redirect(reverse("guard_job", args=[job.pk]))
    if not checkpoints.exists():
        modeladmin.message_user(request, "Register a guard checkpoint first.", messages.ERROR)
        return None
    return render(
        request,
        "admin/guardmodel/judge_samples.html",
        {
            **modeladmin.admin_site.each_context(request),
            "title": "Judge selected samples with a guard checkpoint",
            "checkpoints": checkpoints,
            "count": queryset.count(),
            "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
            "select_across": request.POST.get("select_across", "0"),
            "opts": modeladmin.model._meta,
        },
    )


judge_samples_action.short_description = "Judge selected samples with checkpoint …"  # type: ignore[attr-defined]


@admin.register(GuardJob)
class GuardJobAdmin(admin.ModelAdmin):
    list_display = ["id", "checkpoint", "status", "progress", "invalid", "failed", "created_by", "created_at"]
    list_filter = ["status", "checkpoint"]
    readonly_fields = [f.name for f in GuardJob._meta.fields if f.name != "sample_ids"]
    exclude = ["sample_ids"]
    actions = ["cancel", "resume"]

    def has_add_permission(self, request) -> bool:
        return False  # jobs come from the actions on samples and checkpoints

    @admin.display(description="progress")
    def progress(self, job: GuardJob):
        url = reverse("guard_job", args=[job.pk])
        return format_html(
            '<progress max="100" value="{}"></progress> {}/{} <a href="{}">live</a>',
            job.percent, job.done + job.skipped, job.total, url,
        )  # fmt: skip

    @admin.action(description="Cancel the selected jobs")
    def cancel(self, request, queryset):
        count = sum(services.guard_job_cancel(job) for job in queryset)
        self.message_user(request, f"{count} job(s) cancelled.")

    @admin.action(description="Resume the selected jobs (skips what is judged)")
    def resume(self, request, queryset):
        count = sum(services.guard_job_resume(job) for job in queryset)
        self.message_user(request, f"{count} job(s) queued again.")


@admin.register(Evaluation)
class EvaluationAdmin(admin.ModelAdmin):
    list_display = ["id", "source_kind", "source_name", "truth", "subset_list", "average_f1", "created_at"]
    list_filter = ["source_kind", "truth"]
    readonly_fields = [f.name for f in Evaluation._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.display(description="subsets")
    def subset_list(self, evaluation: Evaluation) -> str:
        return ", ".join(evaluation.subsets)

    @admin.display(description="average F1")
    def average_f1(self, evaluation: Evaluation) -> str:
        value = evaluation.metrics.get("average", {}).get("f1")
        return "—" if value is None else f"{100 * value:.1f}"
