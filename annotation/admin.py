from __future__ import annotations

import zipfile

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.shortcuts import redirect
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from annotation import exports, selectors, services, strata
from annotation.models import (
    AuditEvent,
    ExportJob,
    ImageAsset,
    ImportJob,
    Label,
    PreferencePair,
    Sample,
)
from common.adminforms import MAX_ERRORS_SHOWN, AdminRoleModelAdmin, admin_form
from common.work import JobStatus
from qta.sample_files import FORMATS, SPLITS, DefaultsRejected, file_defaults, guess_format


class LabelInline(admin.TabularInline):
    model = Label
    extra = 0
    fields = ("source_kind", "source_name", "prompt_version", "judgment", "status", "created_at")
    readonly_fields = ("source_kind", "source_name", "prompt_version", "judgment", "status", "created_at")
    can_delete = False


@admin.register(Sample)
class SampleAdmin(AdminRoleModelAdmin):
    list_display = [
        "id",
        "subset",
        "split",
        "category",
        "input_variant",
        "stratum",
        "final_label",
        "final_label_origin",
    ]
    list_filter = ["split", "stratum", "category", "input_variant", "subset"]
    search_fields = ["external_id", "content_hash"]
    readonly_fields = ["content_hash", "stratum", "final_label", "final_label_origin", "created_at"]
    raw_id_fields = ["image"]
    inlines = [LabelInline]
    show_full_result_count = False
    actions = ["restratify"]  # the guard and the jury add theirs, with permissions=["admin_role"] too

    @admin.action(description="Re-stratify the selected samples", permissions=["admin_role"])
    def restratify(self, request, queryset):
        report = strata.stratify(sample_ids=queryset.values_list("pk", flat=True))
        self.message_user(
            request,
            f"{report.samples} samples re-stratified: {report.changed} changed, {report.pairs_created} pairs made, "
            f"{report.pairs_removed} removed, {report.queued} queued for experts.",
        )


@admin.register(Label)
class LabelAdmin(AdminRoleModelAdmin):
    list_display = ["id", "sample_id", "source_kind", "source_name", "prompt_version", "judgment", "status"]
    list_filter = ["source_kind", "status", "prompt_version"]
    raw_id_fields = ["sample", "created_by"]
    readonly_fields = ["created_at"]  # when it was written, not a setting
    show_full_result_count = False

    def save_model(self, request, obj, form, change) -> None:
        if not change:
            obj.created_at = timezone.now()
        super().save_model(request, obj, form, change)

    def has_change_permission(self, request, obj=None) -> bool:
        # Labels are evidence: written through services (which recompute strata and audit), never edited.
        return False


@admin.register(PreferencePair)
class PreferencePairAdmin(AdminRoleModelAdmin):
    list_display = ["sample_id", "prompt_version", "chosen_from", "rejected_from", "created_at"]
    raw_id_fields = ["sample", "chosen", "rejected"]
    list_select_related = ["chosen", "rejected"]
    show_full_result_count = False

    @admin.display(description="Chosen")
    def chosen_from(self, pair: PreferencePair) -> str:
        return f"{pair.chosen.source_name}: {pair.chosen.judgment:g}"

    @admin.display(description="Rejected")
    def rejected_from(self, pair: PreferencePair) -> str:
        return f"{pair.rejected.source_name}: {pair.rejected.judgment:g}"

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(ImageAsset)
class ImageAssetAdmin(AdminRoleModelAdmin):
    list_display = ["sha256", "width", "height", "format", "size_bytes", "created_at"]
    readonly_fields = ["sha256", "file", "width", "height", "format", "size_bytes"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Images arrive with imports, checked and measured; an empty form here would store a broken row.
        return False


class ImportJobForm(forms.Form):
    """An uploaded QTA file (and a zip of its images), imported by the worker."""

    data_file = forms.FileField(
        label="Samples file",
        help_text="Our JSONL (one sample per line) or the GuardTrace-VL release JSON (a list of objects with "
        "image_name, question, thinking, response, evaluation_result).",
    )
    images_archive = forms.FileField(
        required=False,
        label="Images (zip)",
        help_text="The images the rows name: found at their path (also under the zip's single top folder, or "
        "without the path's leading folders), else by a base name that is unique in the zip. Not needed when no "
        "row names an image.",
    )
    format = forms.ChoiceField(
        choices=[("", "from the file name (.json: release, else JSONL)"), *((f, f) for f in FORMATS)],
        required=False,
    )
    split = forms.ChoiceField(
        choices=[("", "as each row says (train when it says none)"), *((s, s) for s in SPLITS)],
        required=False,
    )
    subset = forms.CharField(required=False, help_text="For rows that name none, e.g. S-Eval or MMBench.")
    source_dataset = forms.CharField(required=False, help_text="For rows that name none, e.g. GuardTrace-VL.")
    skip_invalid = forms.BooleanField(
        required=False,
        help_text="Store the valid rows and list the rest (by default a file with any error stores nothing).",
    )

    def clean(self):
        data = super().clean()
        limit = settings.GUARDTRACE_MAX_UPLOAD_BYTES
        for name in ("data_file", "images_archive"):
            if data.get(name) is not None and data[name].size > limit:
                self.add_error(name, f"over the {limit:,}-byte upload limit")
        archive = data.get("images_archive")
        if archive is not None and "images_archive" not in self.errors and not zipfile.is_zipfile(archive):
            self.add_error("images_archive", "must be a zip archive")
        try:
            file_defaults(
                split=data.get("split", ""),
                subset=data.get("subset", ""),
                source_dataset=data.get("source_dataset", ""),
            )
        except DefaultsRejected as exc:
            self.add_error(exc.field, exc.reason)
        return data


# A job's page: what was asked, and what came of it.
_JOB_FIELDS = (
    "status",
    "progress",
    "original_name",
    "images_original_name",
    "format",
    "skip_invalid",
    "split",
    "subset",
    "source_dataset",
    "created",
    "duplicates",
    "error_list",
    "created_by",
    "created_at",
    "started_at",
    "heartbeat_at",
    "finished_at",
    "upload_purged_at",
    "worker",
    "error",
)


class _JobAdmin(AdminRoleModelAdmin):
    """A worker's job (ImportJob, ExportJob): a read-only record whose page reloads itself while the job is queued or
    running, with a button for the list's "cancel" action on it (the admin role only)."""

    change_form_template = "admin/annotation/job_change_form.html"
    # created_by may be empty, which the admin's own select_related() leaves out: one query a row otherwise.
    list_select_related = ["created_by"]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        job = self.get_object(request, object_id)
        waiting = job is not None and job.status in (JobStatus.PENDING, JobStatus.RUNNING)
        context = {"refresh": waiting, "can_cancel": waiting and self.has_admin_role_permission(request)}
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), **context})


@admin.register(ImportJob)
class ImportJobAdmin(_JobAdmin):
    """Add = upload a file and queue its import on the worker; a job's page shows its status and every error."""

    list_display = [
        "id",
        "file_name",
        "format",
        "split",
        "subset",
        "status",
        "created",
        "duplicates",
        "created_by",
        "created_at",
        "finished_at",
    ]
    list_filter = ["status", "format"]
    fields = readonly_fields = _JOB_FIELDS
    actions = ["cancel", "queue_again"]
    change_list_template = "admin/annotation/importjob/change_list.html"

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # what was imported is in the samples; a job is only its record

    @admin.display(description="file")
    def file_name(self, job: ImportJob) -> str:
        return job.file_name

    @admin.display(description="records checked")
    def progress(self, job: ImportJob) -> str:
        return f"{job.done:,} of {job.total:,}" if job.total else "—"

    @admin.action(description="Cancel the selected imports", permissions=["admin_role"])
    def cancel(self, request, queryset):
        count = sum(services.import_job_cancel(job) for job in queryset)
        if count:
            self.message_user(request, f"{count} import(s) cancelled; one already storing its rows finishes.")
        else:
            self.message_user(
                request, "Nothing cancelled: the selected imports had already finished.", messages.WARNING
            )

    @admin.action(
        description="Queue the selected imports again (cancelled, failed or interrupted; from the start)",
        permissions=["admin_role"],
    )
    def queue_again(self, request, queryset):
        count = sum(services.import_job_resume(job) for job in queryset)
        if count:
            self.message_user(request, f"{count} import(s) queued again.")
        else:
            self.message_user(
                request,
                "Nothing queued: only cancelled, failed or interrupted imports whose uploaded files are kept can be "
                "queued again.",
                messages.WARNING,
            )  # fmt: skip

    @admin.display(description="errors")
    def error_list(self, job: ImportJob):
        if not job.errors:
            return "—"
        shown = job.errors[:MAX_ERRORS_SHOWN]
        more = len(job.errors) - len(shown)
        items = format_html_join("", "<li>{}</li>", ((error,) for error in shown))
        tail = format_html("<li>… and {} more</li>", more) if more else ""
        return format_html('<ul class="errorlist">{}{}</ul>', items, tail)

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = ImportJobForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            upload = data["data_file"]
            job = services.import_job_create(
                data_file=upload,
                images_archive=data.get("images_archive"),
                fmt=data["format"] or guess_format(upload.name),
                skip_invalid=data["skip_invalid"],
                user=request.user,
                split=data["split"],
                subset=data["subset"],
                source_dataset=data["source_dataset"],
            )
            self.message_user(request, f"{upload.name} is queued on the worker as import #{job.pk}.")
            return redirect("admin:annotation_importjob_change", job.pk)
        intro = (
            "The worker imports the file. Every row is checked first: on any error nothing is stored (unless you "
            "skip invalid rows), and the job's page lists each error as file:line: field: reason."
        )
        return admin_form(self, request, form, "Import QTA samples", intro=intro)


class ExportJobForm(forms.Form):
    """Which samples to export; every filter left at "any" exports them all."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        any_value = ("", "any")
        subsets = [(s, s) for s in selectors.subsets()]
        self.fields["subset"] = forms.ChoiceField(choices=[any_value, *subsets], required=False)
        for key, title, choices in selectors.CHOICE_FILTERS:
            self.fields[key] = forms.ChoiceField(
                label=title, choices=[any_value, *choices.choices], required=False
            )

    def filters(self) -> dict[str, str]:
        return {key: value for key, value in self.cleaned_data.items() if value}


@admin.register(ExportJob)
class ExportJobAdmin(_JobAdmin):
    """Add = choose filters and queue an export on the worker; a finished export's page links to its zip (downloaded
    through the API, audited), kept for GUARDTRACE_UPLOAD_RETENTION_HOURS."""

    list_display = [
        "id", "filter_list", "status", "progress", "sample_count", "size", "created_by", "created_at", "finished_at",
        "download",
    ]  # fmt: skip
    list_filter = ["status"]
    # The archive's own field is left out: media has no public address, the download link goes through the API.
    fields = readonly_fields = (
        "status", "progress", "filter_list", "sample_count", "size", "download", "created_by", "created_at",
        "started_at", "heartbeat_at", "finished_at", "archive_purged_at", "worker", "error",
    )  # fmt: skip
    actions = ["cancel"]
    change_list_template = "admin/annotation/exportjob/change_list.html"

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # an export is its record and its archive, made by the worker

    @admin.display(description="filters")
    def filter_list(self, job: ExportJob) -> str:
        return ", ".join(f"{key}={value}" for key, value in sorted(job.filters.items())) or "all samples"

    @admin.display(description="samples written")
    def progress(self, job: ExportJob) -> str:
        return f"{job.done:,} of {job.total:,}" if job.total else "—"

    @admin.display(description="size")
    def size(self, job: ExportJob) -> str:
        return f"{job.size_bytes / 1e6:,.1f} MB" if job.size_bytes else "—"

    @admin.display(description="archive")
    def download(self, job: ExportJob):
        if job.archive_purged_at is not None:
            return "deleted after the retention time"
        if not job.downloadable:
            return "—"
        return format_html('<a href="{}">Download the zip</a>', reverse("api_export_download", args=[job.pk]))

    @admin.action(description="Cancel the selected exports", permissions=["admin_role"])
    def cancel(self, request, queryset):
        count = sum(exports.export_job_cancel(job) for job in queryset)
        if count:
            self.message_user(request, f"{count} export(s) cancelled.")
        else:
            self.message_user(
                request, "Nothing cancelled: the selected exports had already finished.", messages.WARNING
            )

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        # The sample list's "Export these samples" link fills the filters in from its query.
        form = ExportJobForm(request.POST or None, initial=request.GET.dict())
        if request.method == "POST" and form.is_valid():
            job = exports.export_job_create(filters=form.filters(), user=request.user)
            self.message_user(request, f"Export #{job.pk} is queued on the worker.")
            return redirect("admin:annotation_exportjob_change", job.pk)
        intro = (
            "The worker writes the matching samples, with all their labels, as one zip (samples.jsonl and "
            "images/, which import reads back). Its page shows the progress and then links to the zip, kept for "
            f"{settings.GUARDTRACE_UPLOAD_RETENTION_HOURS:g} hours; every download is written to the audit log."
        )
        return admin_form(self, request, form, "Export samples", intro=intro, submit="Export")


@admin.register(AuditEvent)
class AuditEventAdmin(AdminRoleModelAdmin):
    list_display = ["at", "user", "action", "sample_id", "label_id", "image_id"]
    list_filter = ["action"]
    raw_id_fields = ["user", "sample", "image", "label"]

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_add_permission(self, request) -> bool:
        return False
