from __future__ import annotations

from dataclasses import replace

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from annotation.admin import SampleAdmin
from annotation.models import Sample
from common.adminforms import AdminRoleModelAdmin, EndpointAdmin, SelectionForm
from common.endpoints import EndpointTarget, endpoints_check
from guardmodel import services
from guardmodel.models import Evaluation, GuardCheckpoint, GuardJob, PromptTemplate, validate_replicas
from guardmodel.prompts import (
    TemplateError,
    prompt_template_check,
    prompt_template_create,
    template_users,
    version_choices,
)
from guardmodel.views import readings
from qta.loading import CheckpointError, check_checkpoint_dir, is_local


class PromptTemplateForm(forms.ModelForm):
    """A template from an uploaded system-prompt file (or pasted text); stored through the service, immutable."""

    system_prompt_file = forms.FileField(
        required=False,
        help_text="A UTF-8 text file, for example your copy of a released guard's prompt file.",
    )
    system_prompt = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 12}),
        help_text="Or paste the system prompt here.",
    )

    class Meta:
        model = PromptTemplate
        fields = ["name", "variant", "layout", "system_prompt"]

    def clean(self):
        data = super().clean()
        upload = data.get("system_prompt_file")
        if upload is not None and upload.size > 400_000:
            raise forms.ValidationError({"system_prompt_file": f"{upload.name}: over 400 kB"})
        text = upload.read() if upload is not None else data.get("system_prompt", "")
        if not text:
            raise forms.ValidationError({"system_prompt": "upload a file or paste the system prompt"})
        try:
            prompt_template_check(
                name=data.get("name", ""),
                system_prompt=text,
                variant=data.get("variant", "qta"),
                layout=data.get("layout", "tagged"),
                source_file=upload.name if upload else "",
            )
        except TemplateError as exc:
            field = "system_prompt_file" if upload is not None and exc.field == "system_prompt" else exc.field
            raise forms.ValidationError({field if field in self.fields else None: str(exc)}) from None
        data["system_prompt_text"] = text
        return data


@admin.register(PromptTemplate)
class PromptTemplateAdmin(AdminRoleModelAdmin):
    form = PromptTemplateForm
    list_display = ["version", "layout", "variant", "source_file", "created_by", "created_at"]
    readonly_fields = ["version", "content_hash", "source_file", "created_by", "created_at"]

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["name", "variant", "layout", "system_prompt_file", "system_prompt"]
        return ["version", "name", "variant", "layout", "system_prompt", "source_file", "content_hash",
                "created_by", "created_at"]  # fmt: skip

    def has_change_permission(self, request, obj=None) -> bool:
        # A version names its content: a change would be a new template.
        return False if obj is not None else super().has_change_permission(request, obj)

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        upload = data.get("system_prompt_file")
        form.instance = prompt_template_create(
            name=data["name"],
            system_prompt=data["system_prompt_text"],
            variant=data["variant"],
            layout=data["layout"],
            source_file=upload.name if upload else "",
            user=request.user,
        )
        for field in obj._meta.concrete_fields:  # the admin's messages and log name the stored row
            setattr(obj, field.attname, getattr(form.instance, field.attname))

    def save_related(self, request, form, formsets, change):
        pass  # no relations; the service stored the row

    def has_delete_permission(self, request, obj=None) -> bool:
        # Only an admin, and never a template a checkpoint or a juror is asked with (its labels would lose it).
        return super().has_delete_permission(request, obj) and (
            obj is None or not _template_users(obj.version)
        )

    def delete_queryset(self, request, queryset):
        in_use = [str(obj) for obj in queryset if _template_users(obj.version)]
        if in_use:
            self.message_user(request, f"In use, not deleted: {', '.join(in_use)}.", messages.ERROR)
        super().delete_queryset(request, queryset.exclude(version__in=in_use))


def _template_users(version: str) -> str:
    return ", ".join(template_users(version))


class GuardCheckpointForm(forms.ModelForm):
    prompt_version = forms.ChoiceField(
        label="Prompt template",
        help_text="How it is asked; its labels carry this version (Admin → Prompt templates).",
    )
    preset = forms.ChoiceField(
        required=False,
        choices=[
            ("", "as set below"),
            ("release", "GuardTrace-VL release: greedy, 2,000 new tokens, 8,192 input"),
        ],
        help_text="Fills the generation settings.",
    )

    class Meta:
        model = GuardCheckpoint
        fields = "__all__"
        widgets = {"replicas": forms.Textarea(attrs={"rows": 3, "placeholder": "http://gpu-2:8000/v1"})}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["prompt_version"].choices = version_choices()

    def clean(self):
        data = super().clean()
        if data.get("preset") == "release":
            preset = services.release_settings(endpoint=bool(data.get("endpoint")))
            data.update(preset)
            for name, value in preset.items():
                setattr(self.instance, name, value)
        if data.get("endpoint") and data.get("max_input_tokens"):
            self.add_error("max_input_tokens", services.ENDPOINT_BUDGET)
        if data.get("replicas") and "endpoint" not in self.errors:
            # Each entry was checked on its own (the field's validator); here, against the endpoint.
            try:
                if not data.get("endpoint"):
                    raise ValidationError("replicas need an endpoint: give the first server there")
                validate_replicas(data["replicas"], data["endpoint"])
            except ValidationError as exc:
                self.add_error("replicas", exc)
        return data


@admin.register(GuardCheckpoint)
class GuardCheckpointAdmin(EndpointAdmin):
    form = GuardCheckpointForm
    list_display = [
        "name", "is_active", "path", "endpoint", "prompt_version", "base_model", "created_at"
    ]  # fmt: skip
    list_filter = ["is_active"]
    readonly_fields = ["is_active", "calibration_summary"]
    actions = ["make_active", "judge_test_subsets", "calibrate", "test_connection"]
    fieldsets = [
        (None, {"fields": ["name", "path", "endpoint", "replicas", "served_model", "api_key_env", "base_model",
                           "is_active"]}),
        ("How it is asked", {"fields": ["prompt_version", "preset", "max_new_tokens", "max_input_tokens", "greedy"]}),
        ("Risk scores", {"fields": ["calibration_summary", "threshold"]}),
    ]  # fmt: skip

    @admin.display(description="calibration")
    def calibration_summary(self, obj: GuardCheckpoint) -> str:
        c = obj.calibration
        if not c:
            return "not calibrated: judge the test subsets, then run the action “Calibrate the risk scores”"
        return (
            f"temperature {c['temperature']} fitted on {c['n']} held-out samples ({c['fitted_at']}); "
            f"ECE of P(harmful) {c['ece_before']} → {c['ece_after']}"
        )

    @admin.action(description="Calibrate the risk scores (fit a temperature)", permissions=["admin_role"])
    def calibrate(self, request, queryset: QuerySet[GuardCheckpoint]):
        for checkpoint in queryset:
            try:
                fitted = services.checkpoint_calibrate(checkpoint)
            except services.EvaluationError as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                self.message_user(
                    request,
                    f"{checkpoint.name}: temperature {fitted['temperature']} on {fitted['n']} samples; "
                    f"ECE {fitted['ece_before']} → {fitted['ece_after']}.",
                )

    def endpoint_target(self, obj: GuardCheckpoint) -> EndpointTarget:
        return services.checkpoint_endpoint_target(obj)

    def endpoint_targets(self, obj: GuardCheckpoint) -> list[EndpointTarget]:
        """The checkpoint's target; with replicas, one per server, each named by its place."""
        target = self.endpoint_target(obj)
        urls = obj.base_urls
        if len(urls) < 2:
            return [target]
        return [
            replace(target, who=f"{target.who}, replica {n} of {len(urls)}", base_url=url)
            for n, url in enumerate(urls, 1)
        ]

    @admin.action(description="Test connection", permissions=["admin_role"])
    def test_connection(self, request, queryset):
        """As every endpoint's (EndpointAdmin), each replica asked; a checkpoint with replicas also gets a line
        naming those that answer."""
        rows = list(queryset)
        targets = [self.endpoint_targets(row) for row in rows]
        checks = iter(endpoints_check([target for row_targets in targets for target in row_targets]))
        for row, row_targets in zip(rows, targets, strict=True):
            row_checks = [next(checks) for _ in row_targets]
            for check in row_checks:
                self.message_user(request, check.message, messages.SUCCESS if check.ok else messages.ERROR)
            if len(row_checks) > 1:
                answer = [c.target.base_url for c in row_checks if c.ok]
                silent = [c.target.base_url for c in row_checks if not c.ok]
                summary = f"checkpoint {row.name}: {len(answer)} of {len(row_checks)} replicas answer"
                summary += f" ({', '.join(answer)})" if answer else ""
                summary += f"; not: {', '.join(silent)}" if silent else ""
                level = messages.SUCCESS if not silent else messages.WARNING if answer else messages.ERROR
                self.message_user(request, summary, level)
        if "_from_change_page" in request.POST and len(rows) == 1:
            return redirect(reverse("admin:guardmodel_guardcheckpoint_change", args=[rows[0].pk]))
        return None

    def save_model(self, request, obj, form, change):
        if obj.path and is_local(obj.path):
            from pathlib import Path

            try:
                check_checkpoint_dir(Path(obj.path).expanduser())
            except CheckpointError as exc:
                messages.warning(request, f"{obj.name}: {exc}")
        super().save_model(request, obj, form, change)

    @admin.action(description="Make the selected checkpoint the active guard", permissions=["admin_role"])
    def make_active(self, request, queryset: QuerySet[GuardCheckpoint]):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one checkpoint to activate.", messages.ERROR)
            return
        checkpoint = queryset.get()
        services.checkpoint_activate(checkpoint)
        self.message_user(request, f"{checkpoint} is now the active guard.")

    @admin.action(description="Judge the test subsets and evaluate", permissions=["admin_role"])
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


class CheckpointChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj) -> str:
        active = " (active)" if obj.is_active else ""
        more = len(obj.base_urls) - 1
        replicas = f" (+{more} replica{'s' if more > 1 else ''})" if more > 0 else ""
        return f"{obj.name}{active} — {obj.endpoint or obj.path}{replicas}"


class JudgeSamplesForm(forms.Form):
    checkpoint = CheckpointChoiceField(
        GuardCheckpoint.objects.all(), widget=forms.RadioSelect, empty_label=None
    )
    locate = forms.BooleanField(
        required=False,
        label="Also locate the harm",
        help_text="Score P(harmful) after each reasoning step and keep the first unsafe one (served checkpoints: "
        "their server must give log-probabilities and continue a message, as vLLM does).",
    )


# Run from the Samples list, whose admin checks has_admin_role_permission (AdminRoleModelAdmin).
@admin.action(description="Judge selected samples with checkpoint …", permissions=["admin_role"])
def judge_samples_action(modeladmin, request, queryset: QuerySet[Sample]):
    """Sample admin action: pick a checkpoint on an intermediate page, then queue a guard job."""
    active = GuardCheckpoint.objects.filter(is_active=True).first()
    # The page's own answer carries "apply"; the Samples list's post only opens the page.
    form = JudgeSamplesForm(request.POST if "apply" in request.POST else None, initial={"checkpoint": active})
    if form.is_valid():
        job = services.guard_job_create(
            checkpoint=form.cleaned_data["checkpoint"],
            sample_ids=queryset.values_list("pk", flat=True),
            user=request.user,
            locate=form.cleaned_data["locate"],
        )
        modeladmin.message_user(request, f"{job} queued for {job.total} samples.")
        return redirect(reverse("guard_job", args=[job.pk]))
    if not GuardCheckpoint.objects.exists():
        modeladmin.message_user(request, "Register a guard checkpoint first.", messages.ERROR)
        return None
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": "Judge selected samples with a guard checkpoint",
        "form": form,
        "selection": SelectionForm(request.POST),
        "count": queryset.count(),
        "opts": modeladmin.model._meta,
    }
    return TemplateResponse(request, "admin/guardmodel/judge_samples.html", context)


# The guard extends the Samples list with its action (annotation does not import the guard).
SampleAdmin.actions = [judge_samples_action, *SampleAdmin.actions]


@admin.register(GuardJob)
class GuardJobAdmin(AdminRoleModelAdmin):
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

    @admin.action(description="Cancel the selected jobs", permissions=["admin_role"])
    def cancel(self, request, queryset):
        count = sum(services.guard_job_cancel(job) for job in queryset)
        self.message_user(request, f"{count} job(s) cancelled.")

    @admin.action(description="Resume the selected jobs (skips what is judged)", permissions=["admin_role"])
    def resume(self, request, queryset):
        count = sum(services.guard_job_resume(job) for job in queryset)
        self.message_user(request, f"{count} job(s) queued again.")


@admin.register(Evaluation)
class EvaluationAdmin(AdminRoleModelAdmin):
    list_display = ["id", "source_kind", "source_name", "truth", "subset_list", "average_f1", "created_at"]
    list_filter = ["source_kind", "truth"]
    readonly_fields = [f.name for f in Evaluation._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.display(description="subsets")
    def subset_list(self, evaluation: Evaluation) -> str:
        return ", ".join(evaluation.subsets)

    @admin.display(description="average F1 (headline · other reading)")
    def average_f1(self, evaluation: Evaluation) -> str:
        return " · ".join(f"{r['f1']} ({r['label']})" for r in readings(evaluation))
