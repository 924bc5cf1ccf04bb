from __future__ import annotations

from django.db import models

from guardmodel.protocol import PROMPT_VERSION


class Juror(models.Model):
    """One vision-language model on the jury (or the oracle that verifies hard negatives)."""

    class Backend(models.TextChoices):
        OPENAI = "openai", "OpenAI-compatible HTTP"
        TRANSFORMERS = "transformers", "Local transformers"

    name = models.SlugField(max_length=64, unique=True)
    backend = models.CharField(max_length=16, choices=Backend.choices)
    model_name = models.CharField(max_length=255, help_text="Served model name, or a local checkpoint path.")
    base_url = models.URLField(
        blank=True, help_text="For OpenAI-compatible servers, e.g. http://vllm:8000/v1"
    )
    api_key_env = models.CharField(
        max_length=64,
        blank=True,
        help_text="Name of the environment variable holding the API key (never the key).",
    )
    prompt_version = models.CharField(max_length=32, default=PROMPT_VERSION)
    max_concurrency = models.PositiveIntegerField(default=8)
    timeout_s = models.PositiveIntegerField(default=120)
    enabled = models.BooleanField(default=True)
    is_oracle = models.BooleanField(default=False, help_text="Used to verify hard negatives, not as a juror.")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
