"""`{{ evaluation|binary_readings }}`: both binary readings of an evaluation, the headline first, for pages that show
an evaluation's figure without its table (the training run list, a checkpoint's lineage)."""

from __future__ import annotations

from django import template

from guardmodel.models import Evaluation
from guardmodel.views import readings

register = template.Library()


@register.filter
def binary_readings(evaluation: Evaluation) -> list[dict]:
    return readings(evaluation)
