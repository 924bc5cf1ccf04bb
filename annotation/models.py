"""QTA samples, their images, every label on them, import and export jobs and the audit log."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import models
from django.db.models import Q

from common.work import LongWork
from qta.protocol import JUDGMENTS, RISK_CATEGORIES

JUDGMENT_CHOICES = [(value, f"{value:g}") for value in JUDGMENTS]


def _image_upload_to(instance: ImageAsset, filename: str) -> str:
    # Content-addressed layout: images/ab/abcdef….png, fanned out so no folder grows too large.
    return f"images/{instance.sha256[:2]}/{filename}"


class ImageAsset(models.Model):
    """An image stored once per content (sha256), whatever number of samples use it."""

    sha256 = models.CharField(max_length=64, unique=True)
    file = models.FileField(upload_to=_image_upload_to, max_length=200)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    format = models.CharField(max_length=8, help_text="Pillow format name: PNG, JPEG, WEBP, GIF…")
    size_bytes = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.sha256[:12]} ({self.width}×{self.height} {self.format})"


class Split(models.TextChoices):
    TRAIN = "train", "Train"
    TEST = "test", "Test"


# Built from the protocol's list so the categories live in one place.
RiskCategory = models.TextChoices(  # type: ignore[call-overload]
    "RiskCategory", [(value, (value, label)) for value, label in RISK_CATEGORIES]
)


class InputVariant(models.TextChoices):
    TEXT_ONLY = "text_only", "Text only"
    IRRELEVANT_IMAGE = "irrelevant_image", "Irrelevant image"
    ALIGNED_IMAGE = "aligned_image", "Aligned image"
    TYPOGRAPHIC = "typographic", "Typographic (FigStep)"
    HADES = "hades", "HADES"
    CS_DJ = "cs_dj", "CS-DJ"
    OTHER = "other", "Other"


class Stratum(models.TextChoices):
    UNLABELLED = "unlabelled", "Unlabelled"
    INCOMPLETE = "incomplete", "Incomplete"
    D3_0 = "d3_0", "D3:0"
    D2_1 = "d2_1", "D2:1"
    D1_1_1 = "d1_1_1", "D1:1:1"


class LabelOrigin(models.TextChoices):
    NONE = "", "None"
    JURY_CONSENSUS = "jury_consensus", "Jury consensus (3:0)"
    JURY_MAJORITY = "jury_majority", "Jury majority (2:1)"
    EXPERT = "expert", "Expert"
    IMPORTED = "imported", "Imported"


class Sample(models.Model):
    """One Question–Thinking–Answer sample, optionally with an image, and where it came from."""

    question = models.TextField()
    thinking = models.TextField(blank=True, help_text="The reasoning trace.")
    answer = models.TextField()
    image = models.ForeignKey(
        ImageAsset, null=True, blank=True, on_delete=models.PROTECT, related_name="samples"
    )

    source_dataset = models.CharField(max_length=100, blank=True)
    subset = models.CharField(
        max_length=64, blank=True, help_text="e.g. S-Eval-VL, HADES-Eval, MM-Eval, MMJ-Eval"
    )
    split = models.CharField(max_length=5, choices=Split.choices, default=Split.TRAIN)
    category = models.CharField(max_length=16, choices=RiskCategory.choices, default="other")
    input_variant = models.CharField(max_length=20, choices=InputVariant.choices, default=InputVariant.OTHER)
    generator_model = models.CharField(max_length=200, blank=True)
    external_id = models.CharField(max_length=200, blank=True)
    provenance = models.JSONField(
        default=dict, blank=True, help_text="How it was made: seed, variant, generator and its parameters."
    )
    content_hash = models.CharField(
        max_length=64, unique=True, help_text="sha256 of question, thinking, answer, image"
    )

    # Derived by annotation.services.sample_labels_resolve, never by signals.
    stratum = models.CharField(max_length=10, choices=Stratum.choices, default=Stratum.UNLABELLED)
    final_label = models.FloatField(null=True, blank=True, choices=JUDGMENT_CHOICES)
    final_label_origin = models.CharField(max_length=16, choices=LabelOrigin.choices, default="", blank=True)

    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["stratum", "id"]),
            models.Index(fields=["subset", "id"]),
            models.Index(fields=["category", "id"]),
            models.Index(fields=["split", "id"]),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(final_label__isnull=True) | Q(final_label__in=JUDGMENTS),
                name="sample_final_label_valid",
            ),
            models.CheckConstraint(
                condition=Q(final_label__isnull=True, final_label_origin="")
                | (Q(final_label__isnull=False) & ~Q(final_label_origin="")),
                name="sample_final_label_has_origin",
            ),
        ]

    def __str__(self) -> str:
        return f"Sample #{self.pk}"


class Label(models.Model):
    """One judgment on one sample from one source under one prompt version."""

    class SourceKind(models.TextChoices):
        JUROR = "juror", "Juror"
        EXPERT = "expert", "Expert"
        GUARD = "guard", "Guard"
        ORACLE = "oracle", "Oracle"
        IMPORTED = "imported", "Imported"

    class Status(models.TextChoices):
        VALID = "valid", "Valid"
        INVALID = "invalid", "Invalid output"
        FAILED = "failed", "Call failed"

    sample = models.ForeignKey(Sample, on_delete=models.CASCADE, related_name="labels")
    source_kind = models.CharField(max_length=10, choices=SourceKind.choices)
    source_name = models.CharField(
        max_length=100, help_text="Juror, checkpoint, expert username or dataset name."
    )
    prompt_version = models.CharField(max_length=32, blank=True)
    analysis = models.TextField(blank=True)
    judgment = models.FloatField(null=True, blank=True, choices=JUDGMENT_CHOICES)
    raw_output = models.TextField(blank=True)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.VALID)
    error = models.TextField(blank=True, help_text="Why the output was invalid or the call failed.")
    meta = models.JSONField(default=dict, blank=True, help_text="Token usage, truncation, attempts.")
    latency_ms = models.FloatField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["sample_id", "source_kind", "source_name"]
        indexes = [models.Index(fields=["source_kind", "source_name", "prompt_version"])]
        constraints = [
            models.UniqueConstraint(
                fields=["sample", "source_kind", "source_name", "prompt_version"], name="one_label_per_source"
            ),
            models.CheckConstraint(
                condition=(Q(status="valid") & Q(judgment__in=JUDGMENTS))
                | (~Q(status="valid") & Q(judgment__isnull=True)),
                name="label_judgment_matches_status",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.source_kind}:{self.source_name} on sample #{self.sample_id}"


class ImportJob(LongWork):
    """An import submitted through the API or the admin, run by a Celery worker; `done` of `total` records checked."""

    data_file = models.FileField(upload_to="imports/")
    images_archive = models.FileField(upload_to="imports/", blank=True)
    # The names the files had on the user's machine: errors name those, never the stored upload's.
    original_name = models.CharField(max_length=255, blank=True)
    images_original_name = models.CharField(max_length=255, blank=True)
    format = models.CharField(max_length=16)
    skip_invalid = models.BooleanField(default=False)
    # For every row that gives none of its own.
    split = models.CharField(max_length=8, blank=True)
    subset = models.CharField(max_length=64, blank=True)
    source_dataset = models.CharField(max_length=100, blank=True)
    created = models.PositiveIntegerField(default=0)
    duplicates = models.PositiveIntegerField(default=0)
    errors = models.JSONField(default=list, blank=True, help_text="The file's errors, by file and line.")
    # Set when the retention rule deleted the uploaded files (their fields are emptied then): the job's record stays.
    upload_purged_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the uploaded files were deleted, GUARDTRACE_UPLOAD_RETENTION_HOURS after the import ended.",
    )

    def __str__(self) -> str:
        return f"Import #{self.pk} of {self.file_name}"

    @property
    def file_name(self) -> str:
        return self.original_name or Path(self.data_file.name or "upload").name


class ExportJob(LongWork):
    """An export of the samples matching `filters` (and all their labels) as one zip, built by a Celery worker;
    `done` of `total` samples written. The archive lives under media/exports/, which no URL serves: it is downloaded
    through the API, by admins, each download audited."""

    filters = models.JSONField(
        default=dict, blank=True, help_text="The sample filters it was asked for (subset, split, category…)."
    )
    archive = models.FileField(upload_to="exports/", blank=True, max_length=200)
    size_bytes = models.PositiveBigIntegerField(default=0, help_text="The archive's size.")
    sample_count = models.PositiveIntegerField(default=0, help_text="Samples in the archive.")
    # Set when the retention rule deleted the archive (its field is emptied then): the job's record stays.
    archive_purged_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the archive was deleted, GUARDTRACE_UPLOAD_RETENTION_HOURS after the export ended.",
    )

    def __str__(self) -> str:
        return f"Export #{self.pk}"

    @property
    def downloadable(self) -> bool:
        return self.status == self.Status.SUCCEEDED and bool(self.archive)


class AuditEvent(models.Model):
    """Who saw which sample's image, who wrote which label, and who exported and downloaded which samples."""

    class Action(models.TextChoices):
        IMAGE_VIEW = "image_view", "Viewed image"
        LABEL_WRITE = "label_write", "Wrote label"
        IMPORT = "import", "Imported samples"
        EXPORT = "export", "Exported samples"
        EXPORT_DOWNLOAD = "export_download", "Downloaded an export"
        ADJUDICATE = "adjudicate", "Adjudicated"
        REVIEW = "review", "Reviewed a disagreement"
        SKIP = "skip", "Skipped a queue item"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    action = models.CharField(max_length=16, choices=Action.choices)
    sample = models.ForeignKey(Sample, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    image = models.ForeignKey(ImageAsset, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    label = models.ForeignKey(Label, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    detail = models.JSONField(default=dict, blank=True)
    at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-at"]


class PreferencePair(models.Model):
    """A D2:1 sample's DPO pair: chosen = a majority juror's annotation, rejected = the minority juror's."""

    sample = models.ForeignKey(Sample, on_delete=models.CASCADE, related_name="preference_pairs")
    prompt_version = models.CharField(max_length=32)
    chosen = models.ForeignKey(Label, on_delete=models.CASCADE, related_name="+")
    rejected = models.ForeignKey(Label, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["sample_id"]
        constraints = [
            models.UniqueConstraint(fields=["sample", "prompt_version"], name="one_pair_per_sample_version")
        ]

    def __str__(self) -> str:
        return f"pair on sample #{self.sample_id}"
