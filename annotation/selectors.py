"""Reads for pages and the API."""

from __future__ import annotations

from django.db.models import Count, QuerySet

from annotation.models import InputVariant, RiskCategory, Sample, Split, Stratum

FILTERS = ("subset", "split", "category", "stratum", "input_variant")
_CHOICES = {
    "split": Split.values,
    "category": RiskCategory.values,
    "stratum": Stratum.values,
    "input_variant": InputVariant.values,
}


def clean_filters(params) -> dict[str, str]:
    """The known filters present in `params` with allowed values; unknown values are dropped."""
    cleaned = {}
    for key in FILTERS:
        value = (params.get(key) or "").strip()
        if value and (key not in _CHOICES or value in _CHOICES[key]):
            cleaned[key] = value
    return cleaned


def sample_list(*, filters: dict[str, str]) -> QuerySet[Sample]:
    return Sample.objects.filter(**filters).select_related("image").order_by("id")


def _counts(field: str) -> list[tuple[str, int]]:
    return list(Sample.objects.values_list(field).annotate(n=Count("id")).order_by(field))


def dashboard_counts() -> dict:
    stratum = dict(_counts("stratum"))
    category = dict(_counts("category"))
    return {
        "total": sum(stratum.values()),
        "by_stratum": [(value, label, stratum.get(value, 0)) for value, label in Stratum.choices],
        "by_subset": _counts("subset"),
        "by_category": [(value, label, category.get(value, 0)) for value, label in RiskCategory.choices],
        "by_split": _counts("split"),
    }


def stratum_counts() -> dict[str, int]:
    counts = dict(_counts("stratum"))
    return {value: counts.get(value, 0) for value in Stratum.values}


def subsets() -> list[str]:
    return list(Sample.objects.order_by("subset").values_list("subset", flat=True).distinct())


def sample_detail(*, sample_id: int) -> Sample:
    return Sample.objects.select_related("image").prefetch_related("labels").get(pk=sample_id)


def reasoning_steps(thinking: str) -> list[str]:
    """The reasoning trace split into its paragraphs (or lines when it has no blank lines)."""
    text = thinking.strip()
    if not text:
        return []
    parts = (
        [p.strip() for p in text.split("\n\n")] if "\n\n" in text else [p.strip() for p in text.splitlines()]
    )
    return [p for p in parts if p]
