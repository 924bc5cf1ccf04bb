from django.contrib import admin

from annotation.models import AuditEvent, ImageAsset, ImportJob, Label, Sample
from guardmodel.admin import judge_samples_action


class LabelInline(admin.TabularInline):
    model = Label
    extra = 0
    fields = ("source_kind", "source_name", "prompt_version", "judgment", "status", "created_at")
    readonly_fields = ("source_kind", "source_name", "prompt_version", "judgment", "status", "created_at")
    can_delete = False


@admin.register(Sample)
class SampleAdmin(admin.ModelAdmin):
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
    actions = [judge_samples_action]


@admin.register(Label)
class LabelAdmin(admin.ModelAdmin):
    list_display = ["id", "sample_id", "source_kind", "source_name", "prompt_version", "judgment", "status"]
    list_filter = ["source_kind", "status", "prompt_version"]
    raw_id_fields = ["sample", "created_by"]
    show_full_result_count = False

    def has_change_permission(self, request, obj=None) -> bool:
        # Labels are evidence: written through services (which recompute strata and audit), never edited.
        return False


@admin.register(ImageAsset)
class ImageAssetAdmin(admin.ModelAdmin):
    list_display = ["sha256", "width", "height", "format", "size_bytes", "created_at"]
    readonly_fields = ["sha256", "file", "width", "height", "format", "size_bytes"]


@admin.register(ImportJob)
class ImportJobAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "format",
        "status",
        "created",
        "duplicates",
        "created_by",
        "created_at",
        "finished_at",
    ]
    readonly_fields = ["status", "created", "duplicates", "errors", "finished_at"]


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["at", "user", "action", "sample_id", "label_id", "image_id"]
    list_filter = ["action"]
    raw_id_fields = ["user", "sample", "image", "label"]

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_add_permission(self, request) -> bool:
        return False
