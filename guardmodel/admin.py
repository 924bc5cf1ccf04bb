from django.contrib import admin

from guardmodel.models import GuardCheckpoint


@admin.register(GuardCheckpoint)
class GuardCheckpointAdmin(admin.ModelAdmin):
    list_display = ["name", "path", "endpoint", "base_model", "is_active", "created_at"]
