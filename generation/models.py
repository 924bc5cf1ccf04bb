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
