"""Reads for pages and the API."""

from __future__ import annotations

import statistics
from datetime import datetime

from django.conf import settings
from django.core.paginator import Page, Paginator
from django.db import connection
from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet
from django.db.models.functions import Left
from django.utils import timezone

from annotation.models import (
    ExpertQueueItem,
    ExpertSkip,
    ExpertSlot,
    InputVariant,
    Label,
    ReviewDecision,
    ReviewStatus,
    RiskCategory,
    Sample,
    Split,
    Stratum,
)
from common.roles import ADMIN, EXPERT, REVIEWER, user_roles
from qta.protocol import PROMPT_VERSION

FILTERS = ("subset", "split", "category", "stratum", "input_variant")
# The filters with a fixed set of values: (parameter, title shown on the list page, choices).
CHOICE_FILTERS = (
    ("split", "Split", Split),
    ("category", "Category", RiskCategory),
    ("stratum", "Stratum", Stratum),
    ("input_variant", "Input variant", InputVariant),
)
_CHOICES = {key: choices.values for key, _, choices in CHOICE_FILTERS}


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


_LIST_COLUMNS = (
    "id", "subset", "split", "category", "input_variant", "image_id", "stratum", "final_label", "final_label_origin",
)  # fmt: skip


def sample_page(*, filters: dict[str, str], page_number: str | int | None, per_page: int) -> Page:
    """One page of the sample list.

    Deep pages stay fast at 100,000+ samples: the OFFSET runs over the id index alone, and only the page's rows
    are then read, without their (possibly long) texts.
    """
    ids = sample_list(filters=filters).values_list("id", flat=True)
    page = Paginator(ids, per_page).get_page(page_number)
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
        "expert_queue": ExpertQueueItem.objects.filter(status=ReviewStatus.OPEN).count(),
        "adjudication": ExpertQueueItem.objects.filter(status=ReviewStatus.ADJUDICATION).count(),
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


def reasoning_steps(thinking: str) -> list[str]:
    """The reasoning trace split into its paragraphs (or lines when it has no blank lines)."""
    text = thinking.strip()
    if not text:
        return []
    parts = (
        [p.strip() for p in text.split("\n\n")] if "\n\n" in text else [p.strip() for p in text.splitlines()]
    )
    return [p for p in parts if p]


# --- expert queue -------------------------------------------------------------------------------------------------


def juror_labels(sample_id: int, prompt_version: str) -> list[Label]:
    """The jury's labels on a sample for a prompt version, in juror-name order (what experts compare)."""
    return list(
        Label.objects.filter(
            sample_id=sample_id, source_kind=Label.SourceKind.JUROR, prompt_version=prompt_version
        ).order_by("source_name")
    )


def blind_to(user) -> Q | None:
    """Labels hidden from this user: experts (who are not also reviewers or admins) never see another expert's
    label on an item that is still being decided, so their own stays independent."""
    roles = user_roles(user)
    if EXPERT not in roles or roles & {REVIEWER, ADMIN}:
        return None
    return (
        Q(source_kind=Label.SourceKind.EXPERT)
        & ~Q(created_by_id=user.pk)
        & Q(sample__expert_queue_item__isnull=False)
        & ~Q(sample__expert_queue_item__status=ReviewStatus.DONE)
    )


def visible_labels(labels: QuerySet[Label], user) -> QuerySet[Label]:
    hidden = blind_to(user)
    return labels if hidden is None else labels.exclude(hidden)


def day_start(now: datetime) -> datetime:
    """Midnight today in the site's time zone (the daily cap's day)."""
    return timezone.localtime(now).replace(hour=0, minute=0, second=0, microsecond=0)


def claimable_slots(*, user) -> QuerySet[ExpertSlot]:
    """Slots this expert may take: of open items, in the item's current round, on items where they hold no slot
    this round and did not skip it (blind, independent labels)."""
    mine = ExpertSlot.objects.filter(item=OuterRef("item"), round=OuterRef("round"), expert=user)
    skipped = ExpertSkip.objects.filter(item=OuterRef("item"), round=OuterRef("round"), expert=user)
    return (
        ExpertSlot.objects.filter(item__status=ReviewStatus.OPEN)
        .exclude(Exists(mine))
        .exclude(Exists(skipped))
        .only("id")
    )


def items_seen_today(*, user, now: datetime | None = None) -> int:
    """Items this expert was shown today: labelled, skipped, or held now."""
    since = day_start(now or timezone.now())
    slots = ExpertSlot.objects.filter(expert=user).aggregate(
        labelled=Count("id", filter=Q(submitted_at__gte=since)),
        holding=Count("id", filter=Q(status=ExpertSlot.Status.CLAIMED)),
    )
    skipped = ExpertSkip.objects.filter(expert=user, at__gte=since).count()
    return slots["labelled"] + slots["holding"] + skipped


def _seconds(claimed: datetime | None, submitted: datetime | None) -> float | None:
    return (submitted - claimed).total_seconds() if claimed and submitted else None


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def expert_progress(*, user) -> dict:
    """One expert's day and history: items seen against the cap, labels given, time per item."""
    now = timezone.now()
    since = day_start(now)
    done = ExpertSlot.objects.filter(expert=user, status=ExpertSlot.Status.SUBMITTED)
    seconds = [
        _seconds(claimed, submitted) for claimed, submitted in done.values_list("claimed_at", "submitted_at")
    ]
    waiting = (
        claimable_slots(user=user).filter(status=ExpertSlot.Status.OPEN).values("item_id").distinct().count()
    )
    return {
        "seen_today": items_seen_today(user=user, now=now),
        "cap": settings.GUARDTRACE_EXPERT_DAILY_CAP,
        "labelled_today": done.filter(submitted_at__gte=since).count(),
        "labelled": len(seconds),  # one entry per submitted slot
        "median_seconds": _median(seconds),
        "waiting": waiting,
        "recent": list(done.select_related("label", "item").order_by("-submitted_at")[:10]),
    }


def expert_team_progress() -> list[dict]:
    """Per expert: labels given (today, in all), items skipped, median seconds per item, whether working now."""
    since = day_start(timezone.now())
    rows: dict[int, dict] = {}
    slots = ExpertSlot.objects.filter(expert__isnull=False).exclude(status=ExpertSlot.Status.OPEN)
    for user_id, username, status, claimed, submitted in slots.values_list(
        "expert_id", "expert__username", "status", "claimed_at", "submitted_at"
    ).iterator(chunk_size=5000):
        row = rows.setdefault(
            user_id, {"username": username, "labelled": 0, "today": 0, "seconds": [], "working": False}
        )
        if status == ExpertSlot.Status.CLAIMED:
            row["working"] = True
            continue
        row["labelled"] += 1
        row["today"] += submitted is not None and submitted >= since
        row["seconds"].append(_seconds(claimed, submitted))
    skips = dict(ExpertSkip.objects.values_list("expert_id").annotate(n=Count("id")).order_by())
    for user_id, row in rows.items():
        row["skipped"] = skips.get(user_id, 0)
        row["median_seconds"] = _median(row.pop("seconds"))
    return sorted(rows.values(), key=lambda r: r["username"])


def expert_queue_counts() -> dict[str, int]:
    counts = dict(ExpertQueueItem.objects.values_list("status").annotate(n=Count("id")).order_by())
    return {value: counts.get(value, 0) for value in ReviewStatus.values}


def adjudication_items(limit: int = 50) -> list[ExpertQueueItem]:
    """Items whose K expert labels had no majority, with the labels of their current round."""
    items = list(
        ExpertQueueItem.objects.filter(status=ReviewStatus.ADJUDICATION)
        .select_related("sample")
        .order_by("id")[:limit]
    )
    # One query for all the items' labels, grouped by item and kept to each item's current round.
    by_item: dict[int, list[Label]] = {item.pk: [] for item in items}
    rounds = {item.pk: item.round for item in items}
    for label in (
        Label.objects.filter(expert_slot__item__in=items)
        .annotate(item_id=F("expert_slot__item_id"), review_round=F("expert_slot__round"))
        .order_by("created_at", "id")
    ):
        if label.review_round == rounds[label.item_id]:  # type: ignore[attr-defined]
            by_item[label.item_id].append(label)  # type: ignore[attr-defined]
    for item in items:
        item.round_labels = by_item[item.pk]  # type: ignore[attr-defined]
    return items


# --- disagreement inspector ---------------------------------------------------------------------------------------

DIRECTIONS = (
    ("missed_harm", "Missed harm (guard safe, label harmful)"),
    ("false_alarm", "False alarm (guard harmful, label safe)"),
    ("severity", "Severity (0.5 vs 1)"),
)
_DIRECTION_FILTERS = {
    "missed_harm": Q(judgment=0, sample__final_label__gt=0),
    "false_alarm": Q(judgment__gt=0, sample__final_label=0),
    "severity": Q(judgment__gt=0, sample__final_label__gt=0),
}
TRIAGE = (("untriaged", "Not yet triaged"), ("triaged", "Triaged"), ("all", "All"))


def direction_of(guard: float, label: float) -> str:
    if guard == 0:
        return "missed_harm"
    return "false_alarm" if label == 0 else "severity"


def clean_disagreement_filters(params) -> dict[str, str]:
    cleaned = {k: v for k, v in clean_filters(params).items() if k in ("subset", "category", "stratum")}
    if params.get("direction") in _DIRECTION_FILTERS:
        cleaned["direction"] = params["direction"]
    triage = params.get("triage")
    cleaned["triage"] = triage if triage in dict(TRIAGE) else "untriaged"
    return cleaned


def disagreements(*, guard_name: str, filters: dict[str, str]) -> QuerySet[Label]:
    """The guard's valid labels, asked with its current template, that differ from the sample's training label
    (jury majority or experts)."""
    from guardmodel.models import GuardCheckpoint

    asked_with = (
        GuardCheckpoint.objects.filter(name=guard_name).values_list("prompt_version", flat=True).first()
    )
    labels = Label.objects.filter(
        source_kind=Label.SourceKind.GUARD,
        source_name=guard_name,
        prompt_version=asked_with or PROMPT_VERSION,
        status=Label.Status.VALID,
        sample__final_label__isnull=False,
    ).exclude(judgment=F("sample__final_label"))
    for key in ("subset", "category", "stratum"):
        if key in filters:
            labels = labels.filter(**{f"sample__{key}": filters[key]})
    if "direction" in filters:
        labels = labels.filter(_DIRECTION_FILTERS[filters["direction"]])
    triaged = Exists(ReviewDecision.objects.filter(sample=OuterRef("sample"), guard_name=guard_name))
    if filters.get("triage") == "untriaged":
        labels = labels.exclude(triaged)
    elif filters.get("triage") == "triaged":
        labels = labels.filter(triaged)
    return labels.order_by("sample_id")


def disagreement_page(*, guard_name: str, filters: dict[str, str], page_number, per_page: int) -> Page:
    ids = disagreements(guard_name=guard_name, filters=filters).values_list("id", flat=True)
    page = Paginator(ids, per_page).get_page(page_number)
    wanted = list(page.object_list)
    rows = {
        label.pk: label
        for label in Label.objects.filter(pk__in=wanted)
        .select_related("sample")
        .only("id", "judgment", "sample__id", "sample__subset", "sample__category", "sample__stratum",
              "sample__final_label", "sample__final_label_origin")
    }  # fmt: skip
    latest: dict[int, ReviewDecision] = {}
    for decision in ReviewDecision.objects.filter(
        sample_id__in=[rows[pk].sample_id for pk in wanted], guard_name=guard_name
    ).order_by("at", "id"):
        latest[decision.sample_id] = decision
    rows_out: list[dict] = [
        {
            "label": rows[pk],
            "sample": rows[pk].sample,
            "direction": direction_of(rows[pk].judgment, rows[pk].sample.final_label),  # type: ignore[arg-type]
            "decision": latest.get(rows[pk].sample_id),
        }
        for pk in wanted
    ]
    page.object_list = rows_out  # type: ignore[assignment]
    return page


def guard_names() -> list[str]:
    """Guard checkpoints, the active one first."""
    from guardmodel.models import GuardCheckpoint

    return list(GuardCheckpoint.objects.order_by("-is_active", "name").values_list("name", flat=True))


def active_guard_name() -> str | None:
    from guardmodel.models import GuardCheckpoint

    return GuardCheckpoint.objects.filter(is_active=True).values_list("name", flat=True).first()
