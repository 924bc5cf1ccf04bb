"""`{{ evaluation|binary_readings }}`: both binary readings of an evaluation, the headline first, for pages that show
an evaluation's figure without its table (the training run list, a checkpoint's lineage). `{{ value|percent }}`: a
score in [0, 1] as every page shows scores, a percentage with one decimal ("93.1"; "—" when there is none)."""

from __future__ import annotations

from django import template

from guardmodel.models import Evaluation
from guardmodel.views import pct, readings

register = template.Library()


@register.filter
def binary_readings(evaluation: Evaluation) -> list[dict]:
    return readings(evaluation)


@register.filter
def percent(value: float | None) -> str:
    return pct(value)
