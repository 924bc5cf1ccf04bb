from __future__ import annotations

from django.contrib import admin

from common.adminforms import AdminRoleModelAdmin
from experts.models import ExpertQueueItem, ExpertSlot, Guidelines, ReviewDecision


class ExpertSlotInline(admin.TabularInline):
    model = ExpertSlot
    extra = 0
    fields = ("round", "index", "status", "expert", "claimed_at", "lease_expires_at", "submitted_at", "label")
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(ExpertQueueItem)
class ExpertQueueItemAdmin(AdminRoleModelAdmin):
    """Read-only: claims, labels and decisions go through the expert pages (experts.services)."""

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
class ReviewDecisionAdmin(AdminRoleModelAdmin):
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


@admin.register(Guidelines)
class GuidelinesAdmin(AdminRoleModelAdmin):
    """One text, shown to experts beside every item: added once, then edited."""

    fields = ["text", "updated_at", "updated_by"]
    readonly_fields = ["updated_at", "updated_by"]
    list_display = ["__str__", "updated_at", "updated_by"]

    def has_add_permission(self, request) -> bool:
        return super().has_add_permission(request) and not Guidelines.objects.exists()

    def save_model(self, request, obj, form, change) -> None:
        obj.updated_by = request.user
        super().save_model(request, obj, form, change)
