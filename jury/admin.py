from django.contrib import admin

from jury.models import Juror


@admin.register(Juror)
class JurorAdmin(admin.ModelAdmin):
    list_display = ["name", "backend", "model_name", "prompt_version", "enabled", "is_oracle"]
    list_filter = ["backend", "enabled", "is_oracle"]
