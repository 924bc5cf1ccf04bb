"""Abstract models the apps share."""

from __future__ import annotations

import contextlib
import os
from datetime import timedelta
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.db import IntegrityError, models
from django.db.models import Q
from django.utils import timezone

from common.errors import MissingApiKey


def validate_base_url(value: str) -> None:
    """An http(s) URL with a host. Unlike URLField, a bare service name (http://vllm:8000/v1, as in Docker
    Compose or Kubernetes) is accepted."""
    parts = urlsplit(value)
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ValidationError(f"{value!r}: the port is not a number") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or " " in value:
        raise ValidationError(
            f"{value!r}: expected an http:// or https:// URL with a host, e.g. http://vllm:8000/v1"
        )


def api_key(env_name: str, *, who: str) -> str | None:
    """The API key held in environment variable `env_name` (None when no variable is named). A variable named but
    not set is an error, never a silent call without a key."""
    if not env_name:
        return None
    key = os.environ.get(env_name)
    if key is None:
        raise MissingApiKey(f"{who}: environment variable {env_name} (the API key) is not set", "api_key_env")
    return key


class Backend(models.TextChoices):
    OPENAI = "openai", "OpenAI-compatible HTTP"
    TRANSFORMERS = "transformers", "Local transformers"


class ModelEndpoint(models.Model):
    """A model the app calls — a juror, a generator: a served OpenAI-compatible endpoint or a local checkpoint."""

    Backend = Backend

    name = models.SlugField(max_length=64, unique=True)
    backend = models.CharField(max_length=16, choices=Backend.choices)
    model_name = models.CharField(
        max_length=255,
        help_text="Served model name (HTTP), or the local checkpoint directory (transformers).",
    )
    base_url = models.CharField(
        max_length=500, blank=True, validators=[validate_base_url],
        help_text="For OpenAI-compatible servers, e.g. http://vllm:8000/v1",
    )  # fmt: skip
    api_key_env = models.CharField(
        max_length=64,
        blank=True,
        help_text="Name of the environment variable holding the API key (never the key).",
    )
    max_concurrency = models.PositiveIntegerField(default=8, help_text="Requests in flight (HTTP).")
    timeout_s = models.PositiveIntegerField(default=120, help_text="Per request, before it is retried.")
    max_tokens = models.PositiveIntegerField(default=512, help_text="Longest reply asked for.")
    enabled = models.BooleanField(default=True)

    class Meta:
        abstract = True
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def queue(self) -> str:
        """The one rule for where a model's calls run: local models where the GPU is; HTTP endpoints, which are I/O
        bound, on the jury queue."""
        return "gpu" if self.backend == Backend.TRANSFORMERS else "jury"

    def api_key(self) -> str | None:
        return api_key(self.api_key_env, who=f"{self._meta.verbose_name} {self.name}")


def has_base_url_when_served(name: str) -> models.CheckConstraint:
    return models.CheckConstraint(condition=~Q(backend="openai", base_url=""), name=name)


class Lease(models.Model):
    """Who drives a piece of long work right now — a juror's tasks, say (key `juror:<id>`): held by one driver under
    its token, renewed while it works, taken over by another once `until` has passed. The one lease table; the
    functions in `common.work` take, renew and give back leases by conditional update."""

    key = models.CharField(max_length=100, primary_key=True)
    token = models.CharField(max_length=32, blank=True)
    until = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.key


def lease_acquire(key: str, token: str, seconds: float) -> float | None:
    """Take the lease `key` for `seconds`; None when taken, else the seconds until its current holder's runs out."""
    now = timezone.now()
    with contextlib.suppress(IntegrityError):  # created at the same moment by another driver
        Lease.objects.get_or_create(key=key)
    taken = (
        Lease.objects.filter(key=key)
        .filter(Q(until__isnull=True) | Q(until__lt=now))
        .update(token=token, until=now + timedelta(seconds=seconds))
    )
    if taken:
        return None
    until = Lease.objects.get(key=key).until
    return max(0.0, (until - now).total_seconds()) if until else 0.0


def lease_renew(key: str, token: str, seconds: float) -> bool:
    """Keep the lease for another `seconds`; False when it is no longer this token's (another driver took over)."""
    return bool(
        Lease.objects.filter(key=key, token=token).update(until=timezone.now() + timedelta(seconds=seconds))
    )


def lease_release(key: str, token: str) -> None:
    Lease.objects.filter(key=key, token=token).update(until=None, token="")


def leases_run_out(prefix: str) -> list[tuple[str, str]]:
    """(key, token) of the leases under `prefix` whose holder stopped renewing them and never gave them back: it died
    (or stalled past its lease)."""
    return list(
        Lease.objects.filter(key__startswith=prefix, until__lt=timezone.now())
        .exclude(token="")
        .values_list("key", "token")
    )


def lease_clear(key: str, token: str) -> bool:
    """Give back a lease that ran out, on its dead holder's behalf. True for one caller only: False when another did
    it first, or the holder renewed it meanwhile."""
    return bool(
        Lease.objects.filter(key=key, token=token, until__lt=timezone.now()).update(until=None, token="")
    )
