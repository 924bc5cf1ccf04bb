"""Dataset snapshots and the training rounds that consume them (SFT → DPO → oracle-guided DPO)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from common.work import LongWork


class Stage(models.TextChoices):
    SFT = "sft", "SFT"
    DPO = "dpo", "DPO"
    OGDPO = "ogdpo", "Oracle-guided DPO"


# The stage whose output a round starts from and is regularised towards (the paper's chain).
PARENT_STAGE = {Stage.DPO: Stage.SFT, Stage.OGDPO: Stage.DPO}


class DatasetSnapshot(models.Model):
    """An immutable training set: its records live in `records.jsonl` under `path`, named by their content hash.

    The manifest records exactly what went in (sample, label and expert-item ids, the jury prompt version); building
    the same data twice gives the same hash and the existing snapshot.
    """

    class Source(models.TextChoices):
        BUILT = "built", "Built from this database"
        IMPORTED = "imported", "Imported release file"

    stage = models.CharField(max_length=8, choices=Stage.choices)
    content_hash = models.CharField(max_length=64, unique=True, help_text="sha256 of the records file.")
    prompt_version = models.CharField(max_length=32, help_text="Jury prompt version the labels come from.")
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.BUILT)
    records = models.PositiveIntegerField(default=0)
    counts = models.JSONField(default=dict, help_text="Records per origin and per judgment.")
    manifest = models.JSONField(default=dict, help_text="What went in, and for OGDPO the mining report.")
    path = models.CharField(max_length=500, help_text="Directory holding records.jsonl.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.get_stage_display()} snapshot {self.content_hash[:12]} ({self.records} records)"


class TrainingRun(LongWork):
    """One round of guard training, run by the gpu worker in a child process."""

    Stage = Stage

    stage = models.CharField(max_length=8, choices=Stage.choices)
    # Progress is counted in optimizer steps (`step` of `max_steps`), as the trainer reports it.
    total = None  # type: ignore[assignment]
    done = None  # type: ignore[assignment]
    phase = models.CharField(
        max_length=40, blank=True, help_text="What the run is doing: waiting for the GPU, mining, training…"
    )
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children",
        help_text="The previous round (DPO: an SFT run; OGDPO: a DPO run).",
    )  # fmt: skip
    base_checkpoint = models.ForeignKey(
        "guardmodel.GuardCheckpoint", null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="The weights the policy starts from.",
    )  # fmt: skip
    reference_checkpoint = models.ForeignKey(
        "guardmodel.GuardCheckpoint", null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="DPO stages: the frozen reference model (the previous stage's output).",
    )  # fmt: skip
    # Lineage points down: the round knows what it made; a checkpoint knows nothing of training.
    output_checkpoint = models.OneToOneField(
        "guardmodel.GuardCheckpoint", null=True, blank=True, on_delete=models.SET_NULL, related_name="made_by",
        help_text="The checkpoint this round made.",
    )  # fmt: skip
    snapshot = models.ForeignKey(
        DatasetSnapshot, null=True, blank=True, on_delete=models.PROTECT, related_name="runs",
        help_text="OGDPO: built by the round's mining step.",
    )  # fmt: skip
    hyperparameters = models.JSONField(default=dict, blank=True)
    device = models.CharField(max_length=32, default="cpu", help_text="One run at a time per device.")
    # Progress, as the child process reports it.
    step = models.PositiveIntegerField(default=0)
    max_steps = models.PositiveIntegerField(default=0)
    epoch = models.FloatField(default=0.0)
    loss = models.FloatField(null=True, blank=True)
    reward_margin = models.FloatField(null=True, blank=True)
    reward_accuracy = models.FloatField(null=True, blank=True)
    samples_per_second = models.FloatField(null=True, blank=True)
    history = models.JSONField(default=list, blank=True, help_text="One entry per logged step.")
    truncation = models.JSONField(
        default=dict,
        blank=True,
        help_text="Records cut to the token budget before training: max_length, records, cut, removed_total, "
        "removed_max (reasoning tokens removed), longest_tokens and longest_record (before the cut).",
    )
    log_tail = models.TextField(blank=True)
    resumes = models.PositiveSmallIntegerField(default=0)
    evaluation = models.ForeignKey(
        "guardmodel.Evaluation", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    evaluation_error = models.TextField(blank=True)

    class Meta(LongWork.Meta):
        constraints = [
            # Two rounds never train on one device at once: the second waits, queued.
            models.UniqueConstraint(
                fields=["device"], condition=Q(status="running"), name="one_running_run_per_device"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_stage_display()} run #{self.pk}"

    @property
    def resumable(self) -> bool:
        return self.status in {self.Status.FAILED, self.Status.CANCELLED, self.Status.INTERRUPTED}

    @property
    def percent(self) -> int:
        return int(100 * self.step / self.max_steps) if self.max_steps else 0
