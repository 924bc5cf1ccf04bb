from __future__ import annotations

from django.db import models
from django.db.models import Q


class GuardCheckpoint(models.Model):
    """A guard model the app can run: a local checkpoint directory or an OpenAI-compatible endpoint."""

    name = models.SlugField(max_length=64, unique=True)
    path = models.CharField(max_length=500, blank=True, help_text="Local checkpoint directory or hub id.")
    endpoint = models.URLField(blank=True, help_text="OpenAI-compatible base URL serving this checkpoint.")
    base_model = models.CharField(max_length=255, blank=True)
    is_active = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_active"], condition=Q(is_active=True), name="one_active_guard"
            ),
            models.CheckConstraint(condition=~Q(path="", endpoint=""), name="guard_has_path_or_endpoint"),
        ]

    def __str__(self) -> str:
        return self.name
