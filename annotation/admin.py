from django.contrib import admin

from annotation.models import (
    AuditEvent,
    ExpertQueueItem,
    ExpertSlot,
    ImageAsset,
    ImportJob,
    Label,
    ReviewDecision,
    Sample,
)
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


class ExpertSlotInline(admin.TabularInline):
    model = ExpertSlot
    extra = 0
    fields = ("round", "index", "status", "expert", "claimed_at", "lease_expires_at", "submitted_at", "label")
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(ExpertQueueItem)
class ExpertQueueItemAdmin(admin.ModelAdmin):
    """Read-only: claims, labels and decisions go through the expert pages (annotation.review)."""

    list_display = ["id", "sample_id", "reason", "status", "round", "labels_needed", "decision", "decided_by"]
    list_filter = ["status", "reason", "decided_by"]
    raw_id_fields = ["sample", "adjudicator", "sent_by"]
    readonly_fields = [f.name for f in ExpertQueueItem._meta.fields]
    inlines = [ExpertSlotInline]
    show_full_result_count = False

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(ReviewDecision)
class ReviewDecisionAdmin(admin.ModelAdmin):
    list_display = [
        "at",
        "sample_id",
        "verdict",
        "guard_name",
        "guard_judgment",
        "label_judgment",
        "reviewer",
    ]
    list_filter = ["verdict", "guard_name"]
    raw_id_fields = ["sample", "guard_label", "reviewer"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
