from django.contrib import admin

from training.models import TrainingRun


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ["__str__", "stage", "status", "created_by", "created_at"]
    list_filter = ["stage", "status"]
