"""Jurors and jury runs in the admin. Runs start from the run form (a selection by subset, split,
stratum, category or all unlabelled) or from the Samples list ("Run the jury on the selected samples")."""

from __future__ import annotations

from pathlib import Path

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from annotation.admin import SampleAdmin
from annotation.models import Sample
from common.adminforms import AdminRoleModelAdmin, EndpointAdmin
from guardmodel.prompts import version_choices
from jury import services
from jury.forms import JuryRunForm
from jury.models import Juror, JuryRun
from qta.loading import CheckpointError, check_checkpoint_dir


class JurorForm(forms.ModelForm):
    prompt_version = forms.ChoiceField(
        label="Prompt template",
        help_text="How it is asked; its labels carry this version (Admin → Prompt templates).",
    )

    class Meta:
        model = Juror
        fields = "__all__"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["prompt_version"].choices = version_choices()

    def clean(self):
        data = super().clean()
        backend = data.get("backend")
        if backend == Juror.Backend.OPENAI and not data.get("base_url"):
            self.add_error(
                "base_url", "An OpenAI-compatible juror needs the server's base URL, e.g. http://vllm:8000/v1"
            )
        if backend == Juror.Backend.TRANSFORMERS and data.get("model_name"):
            try:
                check_checkpoint_dir(Path(data["model_name"]).expanduser())
            except CheckpointError as exc:
                self.add_error("model_name", str(exc))
        if data.get("enabled") and not data.get("is_oracle") and data.get("prompt_version"):
            sitting = Juror.objects.filter(enabled=True, is_oracle=False).exclude(pk=self.instance.pk)
            others = sorted(set(sitting.values_list("prompt_version", flat=True)) - {data["prompt_version"]})
            if others:
                # A jury compares judgments asked the same way; strata and training sets follow its one template.
                self.add_error(
                    "prompt_version",
                    f"the sitting jurors ask with {', '.join(others)}: every enabled juror uses one template "
                    "(disable the others first to switch the jury to another)",
                )
        return data


@admin.register(Juror)
class JurorAdmin(EndpointAdmin):
    form = JurorForm
    actions = ["test_connection"]
    list_display = [
        "name",
        "backend",
        "model_name",
        "base_url",
        "max_concurrency",
        "timeout_s",
        "prompt_version",
        "enabled",
        "is_oracle",
    ]
    list_filter = ["backend", "enabled", "is_oracle"]
    fieldsets = [
        (None, {"fields": ["name", "backend", "model_name", "enabled", "is_oracle"]}),
        ("OpenAI-compatible server", {"fields": ["base_url", "api_key_env"]}),
        ("Calls", {"fields": ["prompt_version", "max_concurrency", "timeout_s", "max_tokens"]}),
    ]


@admin.register(JuryRun)
class JuryRunAdmin(AdminRoleModelAdmin):
    list_display = [
        "id",
        "status",
        "progress_link",
        "samples",
        "total",
        "skipped",
        "created_by",
        "created_at",
        "finished_at",
    ]
    list_filter = ["status"]
    readonly_fields = [
        "selection",
        "prompt_version",
        "status",
        "samples",
        "total",
        "skipped",
        "created_by",
        "finished_at",
    ]
    actions = ["cancel", "resume"]

    @admin.display(description="Progress")
    def progress_link(self, run: JuryRun) -> str:
        return format_html('<a href="{}">progress page</a>', reverse("jury_run", args=[run.pk]))

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def add_view(self, request, form_url="", extra_context=None):
        """The run form: pick the samples by subset / split / stratum / unlabelled and the jurors, preview the
        run's figures, then launch it (a jury of other than three only once confirmed)."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = JuryRunForm(request.POST or None)
        plan, warning = None, ""
        if request.method == "POST" and form.is_valid():
            try:
                plan = services.jury_run_plan(selection=form.selection(), jurors=form.chosen_jurors())
            except services.JuryError as exc:
                form.add_error(None, str(exc))
            else:
                warning = services.jury_size_warning(len(plan.jurors), plan.prompt_version)
                if "_launch" in request.POST and (response := self._launch(request, form, plan, warning)):
                    return response
        context = {
            **self.admin_site.each_context(request),
            "title": "Start a jury run",
            "form": form,
            "opts": self.model._meta,
            "jurors": services.sitting_jurors(),
            "plan": plan,
            "warning": warning,
            "fingerprint": form.fingerprint(plan) if plan else "",
            "confirmed": bool(plan and form.confirmed(plan)),
        }
        return TemplateResponse(request, "admin/jury/run_form.html", context)

    def _launch(self, request, form: JuryRunForm, plan: services.RunPlan, warning: str):
        """Start the previewed run; None (the form shows why) when the form changed since its preview, or when a
        jury of other than three is not confirmed."""
        if form.cleaned_data["previewed"] != form.fingerprint(plan):
            form.add_error(
                None, "The selection or the jury changed since the preview: check the figures below."
            )
            return None
        if warning and not form.confirmed(plan):
            form.add_error(
                "confirm_jurors", f"Tick the box to launch with {len(plan.jurors)} jurors, or choose three."
            )
            return None
        try:
            run = services.jury_run_create(
                selection=form.selection(), jurors=[j.juror for j in plan.jurors], user=request.user
            )
        except services.JuryError as exc:
            form.add_error(None, str(exc))
            return None
        self.message_user(
            request, f"{run} started: {run.total} labels to ask for over {run.samples} samples."
        )
        return redirect("jury_run", run_id=run.pk)

    @admin.action(description="Cancel the selected runs", permissions=["admin_role"])
    def cancel(self, request, queryset: QuerySet[JuryRun]):
        n = sum(services.jury_run_cancel(run) for run in queryset)
        self.message_user(request, f"{n} run(s) cancelled; calls in flight finish and are kept.")

    @admin.action(description="Resume the selected runs", permissions=["admin_role"])
    def resume(self, request, queryset: QuerySet[JuryRun]):
        n = sum(services.jury_run_resume(run) for run in queryset)
        self.message_user(request, f"{n} run(s) resumed; what is labelled is not asked again.")


# Run from the Samples list, whose admin checks has_admin_role_permission (AdminRoleModelAdmin).
@admin.action(description="Run the jury on the selected samples", permissions=["admin_role"])
def run_jury_action(modeladmin, request, queryset: QuerySet[Sample]):
    """Sample admin action: one label per enabled juror on each selected sample."""
    try:
        run = services.jury_run_create(
            selection={"sample_ids": list(queryset.values_list("pk", flat=True))}, user=request.user
        )
    except services.JuryError as exc:
        modeladmin.message_user(request, str(exc), messages.ERROR)
        return None
    modeladmin.message_user(request, f"{run} started: {run.total} labels to ask for.")
    return redirect("jury_run", run_id=run.pk)


# The jury extends the Samples list with its actions (annotation does not import the jury).
SampleAdmin.actions = [*SampleAdmin.actions, run_jury_action]
