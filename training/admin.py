from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from annotation.services import ImportRejected
from common.adminforms import AdminRoleModelAdmin, admin_form
from guardmodel.models import GuardCheckpoint
from guardmodel.services import checkpoint_activate
from qta.hyper import Hyperparameters, for_stage
from qta.images import ArchiveRejected, ZipImageSource
from training import services
from training.datasets import SnapshotError, snapshot_import
from training.models import DatasetSnapshot, Stage, TrainingRun

# The yes/no hyperparameters always hold a value: a select of Yes / No, never Django's "Unknown".
_YES_NO = [("True", "Yes"), ("False", "No")]
_PROMPT_VARIANTS = [
    ("qta", "qta: question, reasoning, answer"),
    ("qa", "qa: question and answer (ablation)"),
]


def _yes(value: str) -> bool:
    return value == "True"


def _hyperparameter_field(name: str, default: Any, help_text: str) -> forms.Field:
    options: dict[str, Any] = {"required": False, "label": name, "help_text": help_text}
    if isinstance(default, bool):
        return forms.TypedChoiceField(choices=_YES_NO, coerce=_yes, empty_value=None, **options)
    if name == "prompt_variant":
        return forms.ChoiceField(choices=_PROMPT_VARIANTS, **options)
    if isinstance(default, int):
        return forms.IntegerField(**options)
    if isinstance(default, float):
        return forms.FloatField(**options)
    return forms.CharField(**options)


def _shown(value: Any) -> str:
    """A hyperparameter as its form field holds it."""
    return str(value)


def _said(value: Any) -> str:
    """A hyperparameter as a sentence says it."""
    return ("Yes" if value else "No") if isinstance(value, bool) else str(value)


class RoundForm(forms.Form):
    """A round's launch form: the base checkpoint (SFT), the preset, the training set, and every hyperparameter
    filled with the value the round would use if left alone.

    A hyperparameter counts as an override only where it differs from the value the form was filled with (the
    hidden `filled_*` fields say for which preset and base): a field left alone follows a change of preset or base,
    with or without the page's script."""

    base_checkpoint = forms.ModelChoiceField(
        queryset=GuardCheckpoint.objects.exclude(path=""), required=False,
        help_text="SFT only: the weights to start from (a local checkpoint directory). Its max_input_tokens, when "
        "set, is the round's max_length.",
    )  # fmt: skip
    preset = forms.ChoiceField(
        choices=[("default", "A real base model (3B)"), ("tiny", "A tiny offline checkpoint (demo, tests)")],
        initial="default",
        help_text="The defaults the hyperparameters below are filled with. The tiny offline checkpoints (hidden 64, "
        "two layers) learn the protocol in a few epochs at a much higher rate, on small images and short records.",
    )

    snapshot = forms.ModelChoiceField(
        queryset=DatasetSnapshot.objects.none(), required=False,
        empty_label="build it from the current labels",
        help_text="The training set: built now from the jury's and experts' labels (OGDPO: mined), or a stored one "
        "— an imported set, say (Admin → Dataset snapshots → Import a training set).",
    )  # fmt: skip
    filled_preset = forms.ChoiceField(choices=preset.choices, required=False, widget=forms.HiddenInput)
    filled_base = forms.ModelChoiceField(
        queryset=GuardCheckpoint.objects.all(), required=False, widget=forms.HiddenInput
    )

    def __init__(self, *args, stage: str, fixed_base: GuardCheckpoint | None = None, **kwargs):
        """`fixed_base`: a DPO stage's base, the parent round's output (an SFT round's base is chosen here)."""
        super().__init__(*args, **kwargs)
        self.stage, self.fixed_base = stage, fixed_base
        if stage != Stage.SFT:
            del self.fields["base_checkpoint"]
        self.fields["snapshot"].queryset = DatasetSnapshot.objects.filter(stage=stage).order_by("-created_at")  # type: ignore[attr-defined]
        reasons = Hyperparameters.reasons()
        default, tiny = for_stage(stage).to_dict(), for_stage(stage, tiny=True).to_dict()
        for spec in fields(Hyperparameters):
            name = spec.name
            # A reason speaks of the 3B default; where the tiny preset differs, it says which value it explains.
            if tiny[name] != default[name]:
                hint = f"3B base: {_said(default[name])} — {reasons[name]}. Tiny preset: {_said(tiny[name])}."
            else:
                hint = f"{reasons[name]}. Default {_said(default[name])}."
            self.fields[f"hp_{name}"] = _hyperparameter_field(name, spec.default, hint)
        self.fields["hp_max_length"].help_text += " A base checkpoint's max_input_tokens comes before both."

    def hyperparameter_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in self.fields if name.startswith("hp_")]

    def round_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in self.fields if not name.startswith(("hp_", "filled_"))]

    def base(self) -> GuardCheckpoint | None:
        """The checkpoint the round starts from, as the form stands (valid forms only)."""
        return self.cleaned_data.get("base_checkpoint") or self.fixed_base

    def effective(self, *, preset: str, base: GuardCheckpoint | None) -> dict[str, Any]:
        """Every hyperparameter as the round would take it with no override."""
        return services.round_hyperparameters(stage=self.stage, base=base, tiny=preset == "tiny").to_dict()

    def overrides(self) -> dict[str, Any]:
        data = self.cleaned_data
        filled = self.effective(
            preset=data.get("filled_preset") or data["preset"], base=data.get("filled_base") or self.base()
        )
        return {
            name: value
            for name, value in ((key.removeprefix("hp_"), data[key]) for key in data if key.startswith("hp_"))
            if value not in (None, "") and value != filled[name]
        }

    def defaults(self, *, bases: list[GuardCheckpoint]) -> dict[str, Any]:
        """What the page's script needs to refill the fields left alone when the preset or the base changes:
        each preset's values, and each base's token budget."""
        return {
            "presets": {preset: self.effective(preset=preset, base=None) for preset in ("default", "tiny")},
            "budgets": {str(c.pk): c.max_input_tokens for c in bases if c.max_input_tokens},
            "fixed_base": str(self.fixed_base.pk) if self.fixed_base else "",
            "gpus": settings.GUARDTRACE_TRAIN_GPUS,
        }


def round_initial(stage: str, *, preset: str, base: GuardCheckpoint | None) -> dict[str, Any]:
    """A fresh launch form's values: the preset, the base, and the hyperparameters they give."""
    values = services.round_hyperparameters(stage=stage, base=base, tiny=preset == "tiny").to_dict()
    initial: dict[str, Any] = {f"hp_{name}": value for name, value in values.items()}
    initial.update(preset=preset, filled_preset=preset, filled_base=base)
    if stage == Stage.SFT:
        initial["base_checkpoint"] = base
    return initial


def round_refilled(data, *, form: RoundForm, hyperparameters: dict[str, Any]):
    """The submitted form again, its hyperparameters set to the config they resolved to (a field that followed a
    new preset shows the new preset's value), filled for the chosen preset and base."""
    data = data.copy()
    for name, value in hyperparameters.items():
        data[f"hp_{name}"] = _shown(value)
    base = form.base()
    data["filled_preset"] = form.cleaned_data["preset"]
    data["filled_base"] = str(base.pk) if base else ""
    return data


# The run's measured figures, shown to 4 significant figures (the raw float says 0.6931471805599453).
_FIGURES = ["epoch", "loss", "reward_margin", "reward_accuracy", "samples_per_second"]


def _figure(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


@admin.register(TrainingRun)
class TrainingRunAdmin(AdminRoleModelAdmin):
    list_display = ["__str__", "stage", "status", "phase", "progress", "loss_shown", "average_f1", "output",
                    "created_by", "created_at"]  # fmt: skip
    list_filter = ["stage", "status"]
    readonly_fields = [
        f"{f.name}_shown" if f.name in _FIGURES else f.name
        for f in TrainingRun._meta.fields
        if f.name != "history"
    ]
    exclude = ["history", *_FIGURES]
    actions = ["new_dpo_round", "new_ogdpo_round", "cancel", "resume", "activate_output"]
    change_list_template = "admin/training/trainingrun/change_list.html"
    list_select_related = ["evaluation", "created_by"]

    def get_queryset(self, request):
        return (
            super().get_queryset(request).select_related("output_checkpoint")
        )  # the checkpoint column, one query

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # a round is what it was launched as; cancel or resume it with the actions

    @admin.display(description="progress")
    def progress(self, run: TrainingRun):
        return format_html(
            '<progress max="100" value="{}"></progress> {}/{} <a href="{}">live</a>',
            run.percent, run.step, run.max_steps or "?", reverse("training_run", args=[run.pk]),
        )  # fmt: skip

    @admin.display(description="epoch", ordering="epoch")
    def epoch_shown(self, run: TrainingRun) -> str:
        return _figure(run.epoch)

    @admin.display(description="loss", ordering="loss")
    def loss_shown(self, run: TrainingRun) -> str:
        return _figure(run.loss)

    @admin.display(description="reward margin", ordering="reward_margin")
    def reward_margin_shown(self, run: TrainingRun) -> str:
        return _figure(run.reward_margin)

    @admin.display(description="reward accuracy", ordering="reward_accuracy")
    def reward_accuracy_shown(self, run: TrainingRun) -> str:
        return _figure(run.reward_accuracy)

    @admin.display(description="samples per second", ordering="samples_per_second")
    def samples_per_second_shown(self, run: TrainingRun) -> str:
        return _figure(run.samples_per_second)

    @admin.display(description="average F1")
    def average_f1(self, run: TrainingRun) -> str:
        value = run.evaluation.metrics.get("average", {}).get("f1") if run.evaluation else None
        return "—" if value is None else f"{100 * value:.1f}"

    @admin.display(description="checkpoint")
    def output(self, run: TrainingRun):
        checkpoint = run.output_checkpoint
        if checkpoint is None:
            return "—"
        return format_html(
            '<a href="{}">{}</a>', reverse("checkpoint_lineage", args=[checkpoint.pk]), checkpoint.name
        )

    def add_view(self, request, form_url="", extra_context=None):
        """New SFT / DPO / OGDPO round: the snapshot preview, the hyperparameters filled with what the round would
        use, the resulting config, launch."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        stage = request.GET.get("stage", Stage.SFT)
        if stage not in Stage.values:
            stage = Stage.SFT
        parent_id = request.GET.get("parent", "")
        parent_id = int(parent_id) if parent_id.isascii() and parent_id.isdigit() else 0
        parent = TrainingRun.objects.filter(pk=parent_id).first()
        # Rounds on the tiny offline checkpoints (the demo's, the tests') start with the tiny preset chosen.
        start = parent.output_checkpoint if parent else GuardCheckpoint.objects.filter(is_active=True).first()
        tiny = start is not None and "tiny" in f"{start.base_model} {start.name}".lower()
        options = {"stage": stage, "fixed_base": parent.output_checkpoint if parent else None}
        initial = round_initial(stage, preset="tiny" if tiny else "default", base=start)
        form = RoundForm(request.POST or None, initial=initial, **options)
        config = self._config(form, start=start, tiny=tiny)
        # "Preview" counts the chosen set against the chosen base and budget; nothing is queued.
        previewing = "_preview" in request.POST
        if form.is_bound and form.is_valid():
            if "hyperparameters" in config:
                refilled = round_refilled(request.POST, form=form, hyperparameters=config["hyperparameters"])
                form = RoundForm(refilled, initial=initial, **options)
                form.is_valid()
            if not previewing:
                try:
                    run = services.training_run_launch(
                        stage=stage, parent=parent, base_checkpoint=form.cleaned_data.get("base_checkpoint"),
                        hyperparameters=form.overrides(), tiny=form.cleaned_data["preset"] == "tiny",
                        user=request.user, snapshot=form.cleaned_data.get("snapshot"),
                    )  # fmt: skip
                except services.TrainingError as exc:
                    form.add_error(None, str(exc))
                else:
                    self.message_user(request, f"{run} queued on the gpu worker.")
                    return redirect("training_run", run_id=run.pk)
        problem = ""
        if stage != Stage.SFT:
            try:
                services.check_lineage(stage=stage, parent=parent, reference=None)
            except services.TrainingError as exc:
                problem = str(exc)
        preview = {} if problem else self._preview(form, stage, parent, start, tiny)
        bases = (
            list(GuardCheckpoint.objects.exclude(path="")) if stage == Stage.SFT else [start] if start else []
        )
        context = {
            **self.admin_site.each_context(request), "opts": self.model._meta, "form": form, "stage": Stage(stage),
            "parent": parent, "preview": preview, "problem": problem, "config": config,
            "defaults": form.defaults(bases=bases),
            "title": f"New {Stage(stage).label} round" + (f" from {parent}" if parent else ""),
        }  # fmt: skip
        return TemplateResponse(request, "admin/training/round_form.html", context)

    @staticmethod
    def _config(form: RoundForm, *, start: GuardCheckpoint | None, tiny: bool) -> dict[str, Any]:
        """The config the round would run with, as the form stands (before a POST: as it was filled), or why there
        is none: the hyperparameters, the base and reference, the effective batch."""
        stage = form.stage
        if form.is_bound:
            if not form.is_valid():
                return {"error": "correct the fields marked above"}
            base, snapshot = form.base(), form.cleaned_data.get("snapshot")
            preset, overrides = form.cleaned_data["preset"], form.overrides()
        else:
            base, snapshot, preset, overrides = start, None, "tiny" if tiny else "default", {}
        try:
            hp = services.round_hyperparameters(
                stage=stage, base=base, tiny=preset == "tiny", overrides=overrides
            )
        except services.TrainingError as exc:
            return {"error": str(exc)}
        gpus = settings.GUARDTRACE_TRAIN_GPUS
        return {
            "hyperparameters": hp.to_dict(),
            "json": json.dumps(hp.to_dict(), indent=2),
            "base": base,
            "reference": form.fixed_base,
            "snapshot": snapshot,
            "effective_batch": hp.batch_size * hp.gradient_accumulation * gpus,
        }

    @staticmethod
    def _preview(form: RoundForm, stage: str, parent, start, tiny: bool) -> dict[str, Any]:
        """The training set and its token budget as the form stands (before a POST: the defaults, the active
        checkpoint as the SFT base)."""
        if form.is_bound and form.is_valid():
            data = form.cleaned_data
            return services.snapshot_preview(
                stage=stage,
                parent=parent,
                base_checkpoint=data.get("base_checkpoint") or start,
                snapshot=data.get("snapshot"),
                tiny=data["preset"] == "tiny",
                hyperparameters=form.overrides(),
            )
        return services.snapshot_preview(stage=stage, parent=parent, base_checkpoint=start, tiny=tiny)

    def _from_one(self, request, queryset: QuerySet[TrainingRun], stage: Stage):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one run to start the next round from.", messages.ERROR)
            return None
        url = reverse("admin:training_trainingrun_add")
        return redirect(f"{url}?stage={stage}&parent={queryset.get().pk}")

    @admin.action(description="New DPO round from run …", permissions=["admin_role"])
    def new_dpo_round(self, request, queryset):
        return self._from_one(request, queryset, Stage.DPO)

    @admin.action(description="New OGDPO round from run …", permissions=["admin_role"])
    def new_ogdpo_round(self, request, queryset):
        return self._from_one(request, queryset, Stage.OGDPO)

    @admin.action(description="Cancel the selected runs", permissions=["admin_role"])
    def cancel(self, request, queryset):
        count = sum(services.training_run_cancel(run) for run in queryset)
        self.message_user(request, f"{count} run(s) cancelled; a running one stops within seconds.")

    @admin.action(
        description="Resume the selected runs from their last checkpoint", permissions=["admin_role"]
    )
    def resume(self, request, queryset):
        for run in queryset:
            try:
                services.training_run_resume(run)
            except services.TrainingError as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                self.message_user(
                    request, f"{run} queued again; it continues from its last saved checkpoint."
                )

    @admin.action(
        description="Make the selected run's checkpoint the active guard", permissions=["admin_role"]
    )
    def activate_output(self, request, queryset):
        if queryset.count() != 1 or queryset.get().output_checkpoint is None:
            self.message_user(request, "Select exactly one finished run with a checkpoint.", messages.ERROR)
            return
        checkpoint = queryset.get().output_checkpoint
        checkpoint_activate(checkpoint)
        self.message_user(request, f"{checkpoint} is now the active guard.")


class ImportForm(forms.Form):
    stage = forms.ChoiceField(
        choices=Stage.choices, help_text="What the file trains: SFT rows, or DPO pairs."
    )
    data_file = forms.FileField(
        label="Training file",
        help_text="JSON list or JSON Lines: the GuardTrace-VL release's SFT / DPO files, LLaMA-Factory sharegpt "
        "(conversations or messages, chosen / rejected) or alpaca (instruction, output), TRL (prompt / completion, "
        "chosen / rejected), or plain rows (question, thinking, response with output or chosen / rejected).",
    )
    images_archive = forms.FileField(
        required=False, label="Images (zip)",
        help_text="The images the rows name (a zip of the release's sft_images or dpo_images folder will do): found "
        "at their path (also under the zip's single top folder, or without the path's leading folders), else by a "
        "base name that is unique in the zip. Not needed for text-only rows.",
    )  # fmt: skip


@admin.register(DatasetSnapshot)
class DatasetSnapshotAdmin(AdminRoleModelAdmin):
    list_display = ["__str__", "stage", "records", "prompt_version", "source", "created_at"]
    list_filter = ["stage", "source"]
    readonly_fields = [f.name for f in DatasetSnapshot._meta.fields]

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # immutable

    def add_view(self, request, form_url="", extra_context=None):
        """Import a training set made elsewhere as a snapshot (rounds otherwise take theirs when they launch)."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = ImportForm(request.POST or None, request.FILES or None)
        errors: list[str] = []
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["data_file"]
            archive = form.cleaned_data.get("images_archive")
            try:
                images = ZipImageSource(archive, name=archive.name) if archive else None
                try:
                    snapshot = snapshot_import(
                        upload.read(), name=upload.name, stage=form.cleaned_data["stage"], images=images,
                        user=request.user,
                    )  # fmt: skip
                finally:
                    if images is not None:
                        images.close()
            except ImportRejected as exc:
                errors = [str(error) for error in exc.errors]
                form.add_error(None, f"{len(errors)} error(s) in {upload.name}; nothing was imported")
            except (SnapshotError, ArchiveRejected) as exc:
                form.add_error(None, str(exc))
            else:
                self.message_user(request, f"{snapshot} imported: {snapshot.records} records.")
                return redirect("training_snapshot", snapshot_id=snapshot.pk)
        intro = (
            "A training set made elsewhere becomes an immutable snapshot that a round can train on (choose it in the "
            "round's launch form). Every row is checked first: on any error nothing is stored, and each error names "
            "its line and field."
        )
        return admin_form(self, request, form, "Import a training set", errors=errors, intro=intro)
