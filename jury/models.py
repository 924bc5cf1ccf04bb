"""Jurors, jury runs and their per-sample work items.

A run is a set of `JuryTask`s, one per sample × juror. A juror's tasks are worked by one driver at a time (the
holder of its lease, `common.models.Lease`), which claims them by conditional update and writes each result together with the
task's new status, so a label is written once however often the work is delivered.
"""

from __future__ import annotations

from django.db import models

from common.models import ModelEndpoint, has_base_url_when_served
from common.work import STATUS_LENGTH, LongWork
from qta.protocol import PROMPT_VERSION


class Juror(ModelEndpoint):
    """One vision-language model on the jury (or the oracle that verifies hard negatives)."""

    name = models.SlugField(max_length=64, unique=True, help_text="Also the source name of its labels.")
    prompt_version = models.CharField(max_length=32, default=PROMPT_VERSION)
    max_concurrency = models.PositiveIntegerField(
        default=8, help_text="Requests in flight (HTTP), or the batch size (local transformers)."
    )
    is_oracle = models.BooleanField(
        default=False, help_text="The external verifier for hard negatives: never sits on a jury run."
    )

    class Meta(ModelEndpoint.Meta):
        constraints = [has_base_url_when_served("openai_juror_has_base_url")]


class JuryRun(LongWork):
    """One pass of the jury over a selection of samples; `done` of `total` tasks labelled (or failed)."""

    selection = models.JSONField(default=dict, help_text="How the samples were chosen.")
    prompt_version = models.CharField(max_length=32, default=PROMPT_VERSION)
    jurors = models.ManyToManyField(Juror, related_name="runs")
    # Driven by one driver per juror, each holding a lease; the run itself runs from the moment it is made.
    status = models.CharField(
        max_length=STATUS_LENGTH,
        choices=LongWork.Status.choices,
        default=LongWork.Status.RUNNING,
        db_index=True,
    )
    samples = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0, help_text="Tasks: samples × jurors still to label.")
    skipped = models.PositiveIntegerField(default=0, help_text="Sample × juror pairs already labelled.")

    def __str__(self) -> str:
        return f"Jury run #{self.pk}"


class JuryTask(models.Model):
    """One sample for one juror within a run."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        CLAIMED = "claimed", "In flight"
        VALID = "valid", "Valid label"
        INVALID = "invalid", "Invalid output"
        FAILED = "failed", "Call failed"

    run = models.ForeignKey(JuryRun, on_delete=models.CASCADE, related_name="tasks")
    sample = models.ForeignKey("annotation.Sample", on_delete=models.CASCADE, related_name="+")
    juror = models.ForeignKey(Juror, on_delete=models.CASCADE, related_name="tasks")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    # "<lease token>:<claim number>" while claimed; a result is written only by the claim's holder.
    claim_token = models.CharField(max_length=48, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    # The Celery worker (node name) whose driver wrote the result: which worker did what, across kills and restarts.
    driven_by = models.CharField(max_length=200, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "sample", "juror"], name="one_task_per_run_sample_juror")
        ]
        indexes = [
            models.Index(fields=["juror", "status", "run"]),
            models.Index(fields=["run", "juror", "status"]),
            models.Index(fields=["claim_token"]),
            models.Index(fields=["run", "completed_at"]),
        ]
