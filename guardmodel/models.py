from __future__ import annotations

import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from common.models import validate_base_url
from common.work import LongWork


class PromptTemplate(models.Model):
    """A prompt a user supplied (for example their copy of a released guard's prompt file): immutable, versioned by
    name and content hash. Checkpoints, jurors and the oracle name the template they are asked with by version."""

    class Layout(models.TextChoices):
        TAGGED = "tagged", "Tagged <question> / <reasoning> / <answer> (this app's layout)"
        RELEASE = "release", "GuardTrace-VL release: Current Task Query / Thinking / Cleaned Response"

    class Variant(models.TextChoices):
        QTA = "qta", "Question, reasoning and answer (levels 0 / 0.5 / 1)"
        QA = "qa", "Question and answer only (levels 0 / 1)"

    name = models.CharField(max_length=19, help_text="Lower-case letters, digits, '_' or '.'.")
    version = models.CharField(
        max_length=32, unique=True, help_text="<name>-<first 12 hex digits of the hash>."
    )
    content_hash = models.CharField(max_length=64)
    variant = models.CharField(max_length=3, choices=Variant.choices, default=Variant.QTA)
    layout = models.CharField(max_length=8, choices=Layout.choices, default=Layout.TAGGED)
    system_prompt = models.TextField()
    source_file = models.CharField(max_length=255, blank=True, help_text="The file it was read from.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "-created_at"]

    def __str__(self) -> str:
        return self.version


def replica_urls(text: str) -> list[str]:
    """The base URLs in a checkpoint's `replicas`: one per line, or separated by spaces or commas."""
    return [url for url in re.split(r"[\s,]+", text) if url]


def validate_replicas(text: str, endpoint: str = "") -> None:
    """Every replica a base URL as the endpoint is, none given twice (nor the endpoint again); the error names the
    first bad one."""
    seen = {endpoint.rstrip("/")} if endpoint else set()
    for url in replica_urls(text):
        try:
            validate_base_url(url)
        except ValidationError as exc:
            raise ValidationError(f"replica {exc.messages[0]}") from None
        if url.rstrip("/") in seen:
            again = "the endpoint" if url.rstrip("/") == endpoint.rstrip("/") else "another replica"
            raise ValidationError(f"replica {url!r} is {again} again: give each server once")
        seen.add(url.rstrip("/"))


class GuardCheckpoint(models.Model):
    """A guard model the app can run: a local checkpoint directory or an OpenAI-compatible endpoint."""

    name = models.SlugField(
        max_length=64, unique=True, help_text="Also the source name of the labels it writes."
    )
    path = models.CharField(max_length=500, blank=True, help_text="Local checkpoint directory or hub id.")
    endpoint = models.CharField(
        max_length=500, blank=True, validators=[validate_base_url],
        help_text="OpenAI-compatible base URL serving this checkpoint.",
    )  # fmt: skip
    replicas = models.TextField(
        blank=True, validators=[validate_replicas],
        help_text="More base URLs serving the same model (vLLM replicas), one per line: requests are spread over "
        "the endpoint and these, each with GUARDTRACE_GUARD_ENDPOINT_CONCURRENCY in flight.",
    )  # fmt: skip
    served_model = models.CharField(
        max_length=255, blank=True, help_text="Model name the endpoint serves (defaults to the path or name)."
    )
    api_key_env = models.CharField(
        max_length=100, blank=True, help_text="Environment variable holding the endpoint's API key."
    )
    base_model = models.CharField(max_length=255, blank=True)
    prompt_version = models.CharField(
        max_length=32, default="qta-v1",
        help_text="The prompt template it is asked with (qta-v1, qa-v1 or a template's version); its labels carry it.",
    )  # fmt: skip
    max_new_tokens = models.PositiveIntegerField(
        null=True, blank=True, help_text="Longest output generated; empty: the app's default."
    )
    max_input_tokens = models.PositiveIntegerField(
        null=True, blank=True,
        help_text="Input budget in tokens: longer inputs lose the middle of the reasoning; empty: the model's context.",
    )  # fmt: skip
    greedy = models.BooleanField(default=True, help_text="Greedy decoding (temperature 0).")
    is_active = models.BooleanField(
        default=False, help_text="The checkpoint the audit API and inspector use."
    )
    calibration = models.JSONField(
        default=dict, blank=True,
        help_text="Temperature fitted on held-out samples (qta/calibration.py), with its sample count and ECE before "
        "and after; the audit API's calibrated scores use it.",
    )  # fmt: skip
    threshold = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="The guard's own P(harmful) (as the evaluation page's curves are drawn) from which the audit API "
        "flags a sample and a reasoning prefix counts as unsafe; empty: the judgment decides, and 0.5 locates.",
    )  # fmt: skip
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

    @property
    def base_urls(self) -> list[str]:
        """Every server of a served checkpoint, the endpoint first; empty for a local one."""
        return [self.endpoint, *replica_urls(self.replicas)] if self.endpoint else []


class GuardJob(LongWork):
    """Judging a set of samples with one checkpoint, on the gpu queue. Re-running skips samples already judged."""

    checkpoint = models.ForeignKey(GuardCheckpoint, on_delete=models.CASCADE, related_name="jobs")
    prompt_version = models.CharField(max_length=32)
    locate = models.BooleanField(
        default=False,
        help_text="Also score P(harmful) after each reasoning step and locate the first unsafe one.",
    )
    sample_ids = models.JSONField(default=list)
    done = models.PositiveIntegerField(default=0, help_text="Samples with a guard label, valid or not.")
    skipped = models.PositiveIntegerField(default=0, help_text="Already judged before this job ran.")
    invalid = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    evaluation = models.ForeignKey(
        "Evaluation", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="The evaluation this job recorded at its end.",
    )  # fmt: skip
    evaluate_subsets = models.JSONField(
        default=list, blank=True, help_text="When set, an evaluation on these subsets is recorded at the end."
    )

    def __str__(self) -> str:
        return f"Guard job #{self.pk} ({self.checkpoint})"

    @property
    def percent(self) -> int:
        return int(100 * (self.done + self.skipped) / self.total) if self.total else 100


class Evaluation(models.Model):
    """Binary and 3-class metrics of one label source against ground truth on a set of test subsets."""

    class SourceKind(models.TextChoices):
        GUARD = "guard", "Guard checkpoint"
        JUROR = "juror", "Juror"
        JURY = "jury", "Jury majority"
        ORACLE = "oracle", "Oracle"
        IMPORTED = "imported", "Imported baseline"
        EXPERT = "expert", "Experts"

    source_kind = models.CharField(max_length=10, choices=SourceKind.choices)
    source_name = models.CharField(max_length=200, blank=True)
    prompt_version = models.CharField(max_length=32, blank=True)
    truth = models.CharField(max_length=16, help_text="Which labels were the ground truth.")
    subsets = models.JSONField(default=list)
    metrics = models.JSONField(default=dict)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.source_label} on {', '.join(self.subsets)}"

    @property
    def source_label(self) -> str:
        kind = self.get_source_kind_display()
        return f"{kind}: {self.source_name}" if self.source_name else kind
