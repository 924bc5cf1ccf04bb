"""Reads for the experts' pages and API: claimable slots, progress, adjudication, the disagreement inspector."""

from __future__ import annotations

import math
import statistics
from datetime import datetime, timedelta

from django.conf import settings
from django.core.paginator import Page, Paginator
from django.db.models import Count, Exists, F, FloatField, OuterRef, Q, QuerySet, Value
from django.db.models.fields.json import KT
from django.db.models.functions import Abs, Cast
from django.utils import timezone

from annotation.models import Label
from annotation.selectors import NO_SUBSET, clean_filters, juror_labels
from experts.models import ExpertQueueItem, ExpertSkip, ExpertSlot, ReviewDecision, ReviewStatus
from guardmodel.models import Evaluation, GuardCheckpoint
from qta.protocol import PROMPT_VERSION


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


def jury_shown(item: ExpertQueueItem) -> bool:
    """Whether the expert sees the jury's labels while labelling: not on a reliability-check item, whose purpose is
    to measure the jury against experts who have not seen it."""
    return item.reason != ExpertQueueItem.Reason.RELIABILITY


def workspace_jurors(item: ExpertQueueItem) -> list[Label]:
    """The jury's labels an expert labels beside (none on a reliability-check item)."""
    return juror_labels(item.sample_id, item.prompt_version) if jury_shown(item) else []


def revisable_slots(*, user) -> QuerySet[ExpertSlot]:
    """This expert's submitted labels that they may still change: their item's round is still open."""
    return (
        ExpertSlot.objects.filter(
            expert=user,
            status=ExpertSlot.Status.SUBMITTED,
            item__status=ReviewStatus.OPEN,
            item__round=F("round"),
        )
        .select_related("item", "label")
        .order_by("-submitted_at")
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
        "revisable": revisable_slots(user=user).count(),
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


BASES = (
    ("judgment", "Judgment level"),
    ("threshold", "P(harmful) at the threshold"),
)
# The guard's own P(harmful) (0.5 read as harmful), as its label stored it; NULL on a label without scores.
_P_HARMFUL = Cast(KT("meta__scores__harmful"), FloatField())


def direction_of(guard: float, label: float) -> str:
    if guard == 0:
        return "missed_harm"
    return "false_alarm" if label == 0 else "severity"


def threshold_direction(p_harmful: float, threshold: float) -> str:
    """Under the threshold basis the guard says harmful or safe only, so a mistake is one of two kinds."""
    return "false_alarm" if p_harmful >= threshold else "missed_harm"


def clean_threshold(text: str | None) -> float | None:
    """A threshold a reviewer typed: a finite number in [0, 1], or None."""
    try:
        value = float(text or "")
    except ValueError:
        return None
    return value if math.isfinite(value) and 0 <= value <= 1 else None


def clean_disagreement_filters(params) -> dict[str, str]:
    cleaned = {k: v for k, v in clean_filters(params).items() if k in ("subset", "category", "stratum")}
    if params.get("direction") in _DIRECTION_FILTERS:
        cleaned["direction"] = params["direction"]
    triage = params.get("triage")
    cleaned["triage"] = triage if triage in dict(TRIAGE) else "untriaged"
    # The default basis is left out, so the triage loop's query strings read as they did before there were two.
    if params.get("basis") == "threshold":
        cleaned["basis"] = "threshold"
    threshold = clean_threshold(params.get("threshold"))
    if threshold is not None:
        cleaned["threshold"] = repr(threshold)  # round-trips exactly through the query string
    return cleaned


def disagreement_threshold(*, guard_name: str, filters: dict[str, str]) -> float | None:
    """The threshold the threshold basis reads at: the reviewer's, else the checkpoint's kept one, else None."""
    if "threshold" in filters:
        return float(filters["threshold"])
    return guard_threshold(guard_name)


def disagreement_basis(*, guard_name: str, filters: dict[str, str], params) -> dict:
    """What the inspector says about its basis: which one, the threshold in use and whose it is, a threshold typed
    that could not be read, and the guard's latest evaluation (where a threshold is chosen)."""
    # Shown back as typed, with what cannot be printed (a NUL character, say) as "�".
    typed = "".join(ch if ch.isprintable() else "\ufffd" for ch in (params.get("threshold") or "").strip())
    return {
        "name": filters.get("basis", "judgment"),
        "threshold": disagreement_threshold(guard_name=guard_name, filters=filters),
        "given": "threshold" in filters,
        "kept": guard_threshold(guard_name),
        "rejected": typed if typed and "threshold" not in filters else "",
        "evaluation": Evaluation.objects.filter(
            source_kind=Evaluation.SourceKind.GUARD, source_name=guard_name
        )
        .order_by("-created_at", "-id")
        .values_list("id", flat=True)
        .first(),
    }


def _guard_labels(guard_name: str) -> QuerySet[Label]:
    """The guard's valid labels, asked with its current template, on samples with a training label."""
    asked_with = (
        GuardCheckpoint.objects.filter(name=guard_name).values_list("prompt_version", flat=True).first()
    )
    return Label.objects.filter(
        source_kind=Label.SourceKind.GUARD,
        source_name=guard_name,
        prompt_version=asked_with or PROMPT_VERSION,
        status=Label.Status.VALID,
        sample__final_label__isnull=False,
    )


def _scored(labels: QuerySet[Label], threshold: float) -> QuerySet[Label]:
    """Labels with scores, each with its P(harmful) and its distance from the threshold (the guard's confidence
    in its call: the list's order, largest first)."""
    return (
        labels.annotate(p_harmful=_P_HARMFUL)
        .filter(p_harmful__isnull=False)
        .annotate(confidence=Abs(F("p_harmful") - Value(threshold, output_field=FloatField())))
    )


def _confidence(guard_name: str, threshold: float, sample_id: int) -> float | None:
    """The sample's key in the threshold basis's order (None without a scored label), read back from the same SQL
    expression the list orders by, so that equal keys compare equal."""
    own = _scored(_guard_labels(guard_name), threshold).filter(sample_id=sample_id)
    return own.values_list("confidence", flat=True).first()  # type: ignore[misc]  # an annotation


def _threshold_directions(threshold: float) -> dict[str, Q]:
    return {
        "missed_harm": Q(p_harmful__lt=threshold, sample__final_label__gt=0),
        "false_alarm": Q(p_harmful__gte=threshold, sample__final_label=0),
    }


def disagreements(*, guard_name: str, filters: dict[str, str]) -> QuerySet[Label]:
    """The guard's valid labels, asked with its current template, that differ from the sample's training label
    (jury majority or experts): by judgment level (in sample order), or — basis "threshold" — by P(harmful) at the
    threshold read against the label's harmful/safe (the most confident mistakes first; none without a threshold;
    a severity filter finds none, as this basis has no severity)."""
    labels = _guard_labels(guard_name)
    threshold = None
    if filters.get("basis") == "threshold":
        threshold = disagreement_threshold(guard_name=guard_name, filters=filters)
        if threshold is None:
            return labels.none()
        directions = _threshold_directions(threshold)
        labels = _scored(labels, threshold).filter(directions["missed_harm"] | directions["false_alarm"])
    else:
        directions = _DIRECTION_FILTERS
        labels = labels.exclude(judgment=F("sample__final_label"))
    for key in ("subset", "category", "stratum"):
        if key in filters:
            value = "" if key == "subset" and filters[key] == NO_SUBSET else filters[key]
            labels = labels.filter(**{f"sample__{key}": value})
    if "direction" in filters:
        labels = labels.filter(directions.get(filters["direction"], Q(pk__in=[])))
    triaged = Exists(ReviewDecision.objects.filter(sample=OuterRef("sample"), guard_name=guard_name))
    if filters.get("triage") == "untriaged":
        labels = labels.exclude(triaged)
    elif filters.get("triage") == "triaged":
        labels = labels.filter(triaged)
    return (
        labels.order_by("-confidence", "sample_id") if threshold is not None else labels.order_by("sample_id")
    )


def disagreement_place(*, guard_name: str, filters: dict[str, str], sample_id: int) -> dict[str, int | None]:
    """Where a sample stands in the filtered disagreements, in the list's order: the next sample after it, and its
    position of all (past the end when it is not in the list). A sample that has just left the list (triaged) keeps
    its place in the order, so the next one is the one that followed it."""
    matching = disagreements(guard_name=guard_name, filters=filters)
    total = matching.count()
    before, after = Q(sample_id__lt=sample_id), Q(sample_id__gt=sample_id)
    if filters.get("basis") == "threshold":
        threshold = disagreement_threshold(guard_name=guard_name, filters=filters)
        key = None if threshold is None else _confidence(guard_name, threshold, sample_id)
        if key is None:
            # No score to place it by: not in the list, and the loop starts at the list's top.
            first = matching.values_list("sample_id", flat=True).first()
            return {"next": first, "total": total, "position": total + 1}
        before = Q(confidence__gt=key) | Q(confidence=key, sample_id__lt=sample_id)
        after = Q(confidence__lt=key) | Q(confidence=key, sample_id__gt=sample_id)
    inside = matching.filter(sample_id=sample_id).exists()
    return {
        "next": matching.filter(after).values_list("sample_id", flat=True).first(),
        "total": total,
        "position": matching.filter(before).count() + 1 if inside else total + 1,
    }


def last_call(*, user, within_s: int = 900) -> ReviewDecision | None:
    """The reviewer's most recent call, while it may still be undone (recent enough)."""
    since = timezone.now() - timedelta(seconds=within_s)
    return ReviewDecision.objects.filter(reviewer=user, at__gte=since).order_by("-at", "-id").first()


def disagreement_page(*, guard_name: str, filters: dict[str, str], page_number, per_page: int) -> Page:
    ids = disagreements(guard_name=guard_name, filters=filters).values_list("id", flat=True)
    page = Paginator(ids, per_page).get_page(page_number)
    wanted = list(page.object_list)
    rows = {
        label.pk: label
        for label in Label.objects.filter(pk__in=wanted)
        .select_related("sample")
        .annotate(p_harmful=_P_HARMFUL)
        .only("id", "judgment", "sample__id", "sample__subset", "sample__category", "sample__stratum",
              "sample__final_label", "sample__final_label_origin")
    }  # fmt: skip
    latest: dict[int, ReviewDecision] = {}
    for decision in ReviewDecision.objects.filter(
        sample_id__in=[rows[pk].sample_id for pk in wanted], guard_name=guard_name
    ).order_by("at", "id"):
        latest[decision.sample_id] = decision
    threshold = (
        disagreement_threshold(guard_name=guard_name, filters=filters)
        if filters.get("basis") == "threshold"
        else None
    )
    rows_out: list[dict] = []
    for pk in wanted:
        label, p_harmful = rows[pk], rows[pk].p_harmful  # type: ignore[attr-defined]
        rows_out.append(
            {
                "label": label,
                "sample": label.sample,
                "p_harmful": p_harmful,
                "direction": threshold_direction(p_harmful, threshold)
                if threshold is not None
                else direction_of(label.judgment, label.sample.final_label),  # type: ignore[arg-type]
                "decision": latest.get(label.sample_id),
            }
        )
    page.object_list = rows_out  # type: ignore[assignment]
    return page


def guard_names() -> list[str]:
    """Guard checkpoints, the active one first."""

    return list(GuardCheckpoint.objects.order_by("-is_active", "name").values_list("name", flat=True))


def guard_threshold(name: str) -> float | None:
    """The P(harmful) from which the checkpoint flags a sample, when one is kept."""
    return GuardCheckpoint.objects.filter(name=name).values_list("threshold", flat=True).first()


def active_guard_name() -> str | None:

    return GuardCheckpoint.objects.filter(is_active=True).values_list("name", flat=True).first()
