"""The experts' desk: how strata (in annotation) reach the expert queue without knowing it exists. Registered when
the experts app loads."""

from __future__ import annotations

from collections.abc import Iterable

from django.conf import settings
from django.db.models import Exists, OuterRef, QuerySet

from annotation.models import Label, Sample, Stratum
from annotation.strata import ExpertDesk
from experts.models import ExpertQueueItem, ExpertSlot, ReviewStatus
from experts.selectors import expert_queue_counts


def slots_for(items: Iterable[tuple[int, int, int]]) -> list[ExpertSlot]:
    """Open slots for (item id, round, K) triples."""
    return [ExpertSlot(item_id=pk, round=rnd, index=i) for pk, rnd, k in items for i in range(k)]


class QueueDesk(ExpertDesk):
    def decisions(self, sample_ids: list[int]) -> dict[int, float | None]:
        return dict(
            ExpertQueueItem.objects.filter(sample_id__in=sample_ids).values_list("sample_id", "decision")
        )

    def follow(self, chunk: list[int], prompt_version: str) -> tuple[int, int]:
        """Queue the D1:1:1 samples for experts, and unqueue jury-split items whose sample is no longer 1:1:1 and
        that no expert has touched."""
        queued_count = unqueued_count = 0
        Item = ExpertQueueItem
        split = set(Sample.objects.filter(pk__in=chunk, stratum=Stratum.D1_1_1).values_list("pk", flat=True))
        queued = set(Item.objects.filter(sample_id__in=chunk).values_list("sample_id", flat=True))
        new = sorted(split - queued)
        if new:
            needed = settings.GUARDTRACE_EXPERT_LABELS
            Item.objects.bulk_create(
                [Item(sample_id=pk, reason=Item.Reason.JURY_SPLIT, prompt_version=prompt_version, labels_needed=needed)
                 for pk in new],
                ignore_conflicts=True,
            )  # fmt: skip
            # ignore_conflicts leaves the primary keys unset: read back the items that have no slots yet.
            bare = Item.objects.filter(sample_id__in=new).exclude(
                Exists(ExpertSlot.objects.filter(item=OuterRef("pk")))
            )
            ExpertSlot.objects.bulk_create(
                slots_for(bare.values_list("pk", "round", "labels_needed")), ignore_conflicts=True
            )
            queued_count = len(new)
        stale = queued - split
        if stale:
            deleted = (
                Item.objects.filter(sample_id__in=stale, reason=Item.Reason.JURY_SPLIT)
                .exclude(
                    Exists(
                        ExpertSlot.objects.filter(item=OuterRef("pk")).exclude(status=ExpertSlot.Status.OPEN)
                    )
                )
                .exclude(sample__labels__source_kind=Label.SourceKind.EXPERT)
                .delete()[1]
            )
            unqueued_count = deleted.get(Item._meta.label, 0)
        return queued_count, unqueued_count

    def undecided(self, *, reliability_check: bool = False) -> QuerySet:
        items = ExpertQueueItem.objects.exclude(status=ReviewStatus.DONE)
        if reliability_check:
            items = items.filter(reason=ExpertQueueItem.Reason.RELIABILITY)
        return items.values("sample_id")

    def holds(self, sample_id: int) -> bool:
        return ExpertQueueItem.objects.filter(sample_id=sample_id).exists()

    def counts(self) -> dict[str, int]:
        return expert_queue_counts()
