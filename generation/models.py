"""Building QTA data: text seed queries, their image+text variants, and the image pools the variants draw from.

A `SeedSet` is one imported file of text safety queries (`SeedQuery`). Each `Variant` is one recorded derivation of
a seed — text only, an irrelevant image drawn from a pool, a semantically aligned image, a typographic rendering, or
an imported HADES / CS-DJ pair — with what it was derived from and how in `derivation`, so it can be made again.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from annotation.models import ImageAsset, InputVariant, RiskCategory
from common.models import ModelEndpoint, has_base_url_when_served
from common.work import STATUS_LENGTH, LongWork


class SeedSet(models.Model):
    name = models.CharField(max_length=200)
    source_file = models.CharField(max_length=300, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name


class SeedQuery(models.Model):
    seed_set = models.ForeignKey(SeedSet, on_delete=models.CASCADE, related_name="queries")
    external_id = models.CharField(
        max_length=200, blank=True, help_text="The file's own id for the query, if any."
    )
    text = models.TextField()
    category = models.CharField(max_length=32, choices=RiskCategory.choices, default="other")
    source = models.CharField(
        max_length=100, blank=True, help_text="Where the query comes from, e.g. S-Eval."
    )
    line = models.PositiveIntegerField(help_text="Its line in the imported file.")

    class Meta:
        ordering = ["seed_set", "line"]
        constraints = [
            models.UniqueConstraint(
                fields=["seed_set", "external_id"],
                condition=~Q(external_id=""),
                name="one_seed_per_external_id",
            )
        ]

    def __str__(self) -> str:
        return f"seed #{self.pk}: {self.text[:60]}"


class ImagePool(models.Model):
    """Images a team uploads for expansion: drawn at random (irrelevant images) or matched by caption (aligned)."""

    name = models.SlugField(max_length=64, unique=True)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class PoolImage(models.Model):
    pool = models.ForeignKey(ImagePool, on_delete=models.CASCADE, related_name="images")
    image = models.ForeignKey(ImageAsset, on_delete=models.PROTECT, related_name="+")
    caption = models.TextField(blank=True, help_text="What the image shows; aligned expansion matches on it.")

    class Meta:
        ordering = ["pool", "id"]
        constraints = [models.UniqueConstraint(fields=["pool", "image"], name="one_pool_entry_per_image")]


class Variant(models.Model):
    Kind = InputVariant

    seed = models.ForeignKey(SeedQuery, on_delete=models.CASCADE, related_name="variants")
    kind = models.CharField(max_length=20, choices=InputVariant.choices)
    text = models.TextField(help_text="The text a generator is asked (with the image, when there is one).")
    image = models.ForeignKey(ImageAsset, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    derivation = models.JSONField(default=dict, help_text="How it was made: pool, draw, similarity, font, …")
    key = models.CharField(
        max_length=64, help_text="sha256 of kind, text, image and derivation: one row per recipe."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["seed", "kind", "id"]
        constraints = [models.UniqueConstraint(fields=["seed", "key"], name="one_variant_per_recipe")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} of seed #{self.seed_id}"


class Expansion(LongWork):
    """One expansion asked for in the admin, worked on a worker seed chunk by chunk (progress in `done`).

    Expanding is idempotent, so an expansion redelivered after a crash runs again and only adds what is missing."""

    seed_sets = models.ManyToManyField(SeedSet, related_name="expansions")
    parameters = models.JSONField(default=dict, help_text="kinds, pools, rng seed, font size.")
    total = models.PositiveIntegerField(default=0, help_text="Seeds to expand.")
    done = models.PositiveIntegerField(default=0, help_text="Seeds expanded so far.")
    created = models.PositiveIntegerField(default=0, help_text="Variants made.")
    kept = models.PositiveIntegerField(default=0, help_text="Variants already there from the same recipe.")
    by_kind = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return f"Expansion #{self.pk}"


class Generator(ModelEndpoint):
    """A reasoning model that answers variants with a reasoning trace and an answer, configured like a juror."""

    name = models.SlugField(max_length=64, unique=True, help_text="Recorded as the samples' generator.")
    timeout_s = models.PositiveIntegerField(default=600, help_text="Per request, before it is retried.")
    max_tokens = models.PositiveIntegerField(
        default=4096, help_text="Longest reply asked for (reasoning included)."
    )
    temperature = models.FloatField(default=0.7)
    samples_per_variant = models.PositiveIntegerField(default=1, help_text="Replies asked per variant.")

    class Meta(ModelEndpoint.Meta):
        constraints = [has_base_url_when_served("openai_generator_has_base_url")]


class GenerationRun(LongWork):
    """Replies asked of generators for variants, one task per reply; `done` of `total` tasks answered."""

    generators = models.ManyToManyField(Generator, related_name="runs")
    parameters = models.JSONField(default=dict, help_text="Per generator: max_tokens, temperature, samples.")
    split = models.CharField(max_length=5, default="train")
    subset = models.CharField(max_length=64, blank=True, help_text="Given to the samples made.")
    # Driven by one driver per generator, each holding a lease; the run itself runs from the moment it is made.
    status = models.CharField(
        max_length=STATUS_LENGTH,
        choices=LongWork.Status.choices,
        default=LongWork.Status.RUNNING,
        db_index=True,
    )

    def __str__(self) -> str:
        return f"Generation run #{self.pk}"


class GenerationTask(models.Model):
    """One reply asked of one generator for one variant (sample_index counts the replies asked)."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        CLAIMED = "claimed", "In flight"
        DONE = "done", "Sample made"
        FLAGGED = "flagged", "Sample made, reasoning not separable"
        FAILED = "failed", "Call failed"

    run = models.ForeignKey(GenerationRun, on_delete=models.CASCADE, related_name="tasks")
    variant = models.ForeignKey(Variant, on_delete=models.CASCADE, related_name="tasks")
    generator = models.ForeignKey(Generator, on_delete=models.CASCADE, related_name="tasks")
    sample_index = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING, db_index=True)
    claim_token = models.CharField(max_length=48, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    sample = models.ForeignKey(
        "annotation.Sample", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    usage = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["run", "variant", "generator", "sample_index"], name="one_task_per_reply"
            )
        ]
        indexes = [models.Index(fields=["run", "generator", "status"])]
