from __future__ import annotations

from django.conf import settings
from django.db import models

from guardmodel.models import JobStatus


class TrainingRun(models.Model):
    """One round of guard training (SFT, DPO or oracle-guided refined DPO)."""

    class Stage(models.TextChoices):
        SFT = "sft", "SFT"
        DPO = "dpo", "DPO"
        OGDPO = "ogdpo", "Oracle-guided DPO"

    Status = JobStatus

    stage = models.CharField(max_length=8, choices=Stage.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    base_checkpoint = models.ForeignKey(
        "guardmodel.GuardCheckpoint", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    hyperparameters = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.get_stage_display()} run #{self.pk}"
