"""Reads for pages and the API."""

from __future__ import annotations

from django.core.paginator import Page, Paginator
from django.db import connection
from django.db.models import Count, Q, QuerySet
from django.db.models.functions import Left

from annotation.models import (
    InputVariant,
    Label,
    RiskCategory,
    Sample,
    Split,
    Stratum,
)
from annotation.search import ParsedSearch, index_plans, search_samples
from annotation.strata import expert_desk
from common.roles import ADMIN, EXPERT, REVIEWER, user_roles
from qta.protocol import reasoning_steps  # noqa: F401 - the pages and services read steps from here

FILTERS = ("subset", "split", "category", "stratum", "input_variant")
# The filters with a fixed set of values: (parameter, title shown on the list page, choices).
CHOICE_FILTERS = (
    ("split", "Split", Split),
    ("category", "Category", RiskCategory),
    ("stratum", "Stratum", Stratum),
    ("input_variant", "Input variant", InputVariant),
)
_CHOICES = {key: choices.values for key, _, choices in CHOICE_FILTERS}
# The subset filter's value for samples that have no subset (an empty value means "any subset").
NO_SUBSET = "(none)"

# The list's orders: (parameter, title, ORDER BY). Each ends in the id so pages never overlap, and each is served by
# an index (the primary key, or the (field, id) indexes on Sample). Ids grow as samples are added, so they stand
# for the date added.
SORTS = (
    ("oldest", "Oldest first", ("id",)),
    ("newest", "Newest first", ("-id",)),
    ("stratum", "Stratum", ("stratum", "id")),
    ("category", "Category", ("category", "id")),
    ("subset", "Subset", ("subset", "id")),
)
DEFAULT_SORT = "oldest"
_ORDER_BY = {key: order for key, _, order in SORTS}


def clean_filters(params) -> dict[str, str]:
    """The known filters present in `params` with allowed values; unknown values are dropped (a NUL character too,
    which no stored text holds and PostgreSQL refuses in a query)."""
    cleaned = {}
    for key in FILTERS:
        value = (params.get(key) or "").strip()
        if value and "\x00" not in value and (key not in _CHOICES or value in _CHOICES[key]):
            cleaned[key] = value
    return cleaned


def clean_sort(value: str | None) -> str:
    """One of SORTS' keys; anything else is the default order."""
    return value if value in _ORDER_BY else DEFAULT_SORT


def _filter_q(filters: dict[str, str]) -> Q:
    if filters.get("subset") == NO_SUBSET:
        filters = {**filters, "subset": ""}
    return Q(**filters)


def sample_list(
    *, filters: dict[str, str], search: ParsedSearch | None = None, sort: str = DEFAULT_SORT
) -> QuerySet[Sample]:
    """Samples matching `filters` (clean_filters) and a full-text `search`, in the `sort` order (clean_sort)."""
    samples = Sample.objects.filter(_filter_q(filters))
    if search is not None:
        samples = search_samples(samples, search)
    return samples.select_related("image").order_by(*_ORDER_BY[clean_sort(sort)])


_LIST_COLUMNS = (
    "id", "subset", "split", "category", "input_variant", "image_id", "stratum", "final_label", "final_label_origin",
)  # fmt: skip


def clamp_page(value: str | int | None, *, last: int) -> tuple[int, bool]:
    """The page asked for, clamped to 1..last, and whether it had to be clamped (a missing value is page 1)."""
    if value is None or value == "":
        return 1, False
    try:
        number = int(str(value).strip()[:20])
    except ValueError:
        return 1, True
    clamped = min(max(number, 1), max(last, 1))
    return clamped, clamped != number


def sample_page(
    *,
    filters: dict[str, str],
    page_number: str | int | None,
    per_page: int,
    search: ParsedSearch | None = None,
    sort: str = DEFAULT_SORT,
) -> Page:
    """One page of the sample list; a page number outside the list gives its nearest page.

    Deep pages stay fast at 100,000+ samples: the OFFSET runs over an index (or the search's matches) alone, and
    only the page's rows are then read, without their (possibly long) texts.
    """
    ids = sample_list(filters=filters, search=search, sort=sort).values_list("id", flat=True)
    paginator = Paginator(ids, per_page)
    with index_plans(search or ParsedSearch()):
        page = paginator.page(clamp_page(page_number, last=paginator.num_pages)[0])
        wanted = list(page.object_list)
        rows = (
            Sample.objects.filter(id__in=wanted)
            .only(*_LIST_COLUMNS)
            .annotate(question_preview=Left("question", 120))
        )
        by_id = {row.pk: row for row in rows}
    # The page was cut from ids; hand the template the rows for those ids, in order.
    page.object_list = [by_id[pk] for pk in wanted]  # type: ignore[misc]
    return page


def dashboard_counts() -> dict:
    desk = expert_desk().counts()
    """Counts by stratum, subset, category and split from one scan of the samples."""
    stratum: dict[str, int] = {}
    subset: dict[str, int] = {}
    category: dict[str, int] = {}
    split: dict[str, int] = {}
    grouped = (
        Sample.objects.values_list("stratum", "subset", "category", "split")
        .annotate(n=Count("id"))
        .order_by()
    )
    for stratum_value, subset_value, category_value, split_value, n in grouped:
        for counts, key in ((stratum, stratum_value), (subset, subset_value), (category, category_value),
                            (split, split_value)):  # fmt: skip
            counts[key] = counts.get(key, 0) + n
    return {
        "total": sum(stratum.values()),
        "by_stratum": [(value, label, stratum.get(value, 0)) for value, label in Stratum.choices],
        "by_subset": sorted(subset.items()),
        "by_category": [(value, label, category.get(value, 0)) for value, label in RiskCategory.choices],
        "by_split": sorted(split.items()),
        "expert_queue": desk["open"],
        "adjudication": desk["adjudication"],
    }


def stratum_counts() -> dict[str, int]:
    counts = dict(Sample.objects.values_list("stratum").annotate(n=Count("id")).order_by())
    return {value: counts.get(value, 0) for value in Stratum.values}


_DISTINCT_SUBSETS = """
WITH RECURSIVE subsets(subset) AS (
    SELECT MIN(subset) FROM annotation_sample
    UNION ALL
    SELECT (SELECT MIN(s.subset) FROM annotation_sample s WHERE s.subset > subsets.subset)
    FROM subsets WHERE subsets.subset IS NOT NULL
)
SELECT subset FROM subsets WHERE subset IS NOT NULL
"""


def subsets() -> list[str]:
    """Distinct subsets by walking the subset index (one lookup per subset, not a scan of every sample)."""
    with connection.cursor() as cursor:
        cursor.execute(_DISTINCT_SUBSETS)
        return [row[0] for row in cursor.fetchall()]


def sample_detail(*, sample_id: int) -> Sample:
    return Sample.objects.select_related("image").prefetch_related("labels").get(pk=sample_id)


# --- expert queue -------------------------------------------------------------------------------------------------


def juror_labels(sample_id: int, prompt_version: str) -> list[Label]:
    """The jury's labels on a sample for a prompt version, in juror-name order (what experts compare)."""
    return list(
        Label.objects.filter(
            sample_id=sample_id, source_kind=Label.SourceKind.JUROR, prompt_version=prompt_version
        ).order_by("source_name")
    )


def blind_samples(user) -> QuerySet | None:
    """Ids of the samples whose labels this user may not see in full, or None: for an expert who is not also a
    reviewer or admin, those the experts are still deciding (their own labels stay independent)."""
    roles = user_roles(user)
    if EXPERT not in roles or roles & {REVIEWER, ADMIN}:
        return None
    return expert_desk().undecided()


def blind_to(user) -> Q | None:
    """Labels hidden from this user. On a sample still being decided, an expert sees their own labels and the
    jury's, nothing else (no imported ground truth, no guard, no other expert); and not even the jury's when the
    item checks the jury's reliability."""
    undecided = blind_samples(user)
    if undecided is None:
        return None
    jury_hidden = expert_desk().undecided(reliability_check=True)
    others = Q(sample_id__in=undecided) & ~Q(created_by_id=user.pk)
    return others & (~Q(source_kind=Label.SourceKind.JUROR) | Q(sample_id__in=jury_hidden))


def training_labels_hidden(user, sample_ids) -> set[int]:
    """Those of these samples whose training label this user may not see (one query)."""
    undecided = blind_samples(user)
    if undecided is None:
        return set()
    return set(undecided.filter(sample_id__in=list(sample_ids)).values_list("sample_id", flat=True))


def visible_labels(labels: QuerySet[Label], user) -> QuerySet[Label]:
    hidden = blind_to(user)
    return labels if hidden is None else labels.exclude(hidden)
