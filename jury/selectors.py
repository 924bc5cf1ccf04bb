"""Reads about the jury that other layers ask for through the hooks in `jury/apps.py`."""

from __future__ import annotations

from jury.models import Juror
from qta.protocol import PROMPT_VERSION


def sitting_prompt_version() -> str:
    """The one template the sitting (enabled, non-oracle) jurors share — the juror form keeps them on one; qta-v1
    when none sits."""
    versions = set(
        Juror.objects.filter(enabled=True, is_oracle=False).values_list("prompt_version", flat=True)
    )
    return versions.pop() if len(versions) == 1 else PROMPT_VERSION


def template_jurors(version: str) -> list[str]:
    """The jurors (the oracle too) asked with this template."""
    return [
        f"juror {name}"
        for name in Juror.objects.filter(prompt_version=version).values_list("name", flat=True)
    ]
