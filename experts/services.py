"""Writes for the expert queue (claims, labels, skips, adjudication) and for reviewers' triage of disagreements.

Concurrency rules, each backed by the database rather than by care:
- a slot is claimed by a conditional UPDATE on its row (after `SELECT … FOR UPDATE SKIP LOCKED` on PostgreSQL,
  so twenty experts asking at once get twenty different slots without retrying), and its claim token changes on
  every claim, so a stale tab can never write into someone else's claim;
- unique constraints give each expert at most one claim at a time and at most one slot per item and round (blind,
  independent labels);
- a submission locks the sample and the item, then flips its own slot from claimed to submitted by a conditional
  UPDATE: a second submit of the same claim (two tabs, a retried request) changes no row and is refused, and the
  K-th label always sees the other K-1.
"""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q, Subquery
from django.utils import timezone

from annotation import strata
from annotation.models import AuditEvent, Label, Sample, Stratum
from annotation.selectors import reasoning_steps
from annotation.strata import jury_prompt_version, majority
from common.errors import ApplicationError, Conflict, TooManyRequests
from experts.desk import slots_for
from experts.models import (
    ExpertQueueItem,
    ExpertSkip,
    ExpertSlot,
    ReviewDecision,
    ReviewStatus,
    expert_round_key,
)
from experts.selectors import claimable_slots, items_seen_today
from qta.protocol import JUDGMENTS

Item = ExpertQueueItem
Slot = ExpertSlot


class ReviewError(ApplicationError):
    """A queue action that cannot be done; the message says why, for the person who asked."""


class ClaimLost(ReviewError):
    status_code = Conflict.status_code
    """The claim is no longer this expert's (submitted already, skipped, or taken over after expiry)."""


class DailyCapReached(ReviewError):
    status_code = TooManyRequests.status_code


@dataclass(frozen=True)
class ExpertSubmission:
    judgment: float
    analysis: str
    first_harmful_step: int | None = None
    prefilled_from: str = ""


# --- the queue ----------------------------------------------------------------------------------------------------


def expert_queue_send(*, sample: Sample, user, reason: str = Item.Reason.REVIEWER, note: str = "") -> Item:
    """Put a sample in front of experts: a new item, or a new round of a decided one. An item still waiting for
    labels is left as it is."""
    needed = settings.GUARDTRACE_EXPERT_LABELS
    with transaction.atomic():
        Sample.objects.select_for_update(no_key=True).filter(pk=sample.pk).first()
        item = Item.objects.select_for_update().filter(sample=sample).first()
        if item is None:
            item = Item.objects.create(
                sample=sample, reason=reason, labels_needed=needed, sent_by=user, note=note,
                prompt_version=jury_prompt_version(),
            )  # fmt: skip
        elif item.status == ReviewStatus.OPEN:
            return item
        else:
            item.round += 1
            item.status = ReviewStatus.OPEN
            item.labels_needed = needed
            item.reason, item.sent_by, item.note = reason, user, note
            item.save(update_fields=["round", "status", "labels_needed", "reason", "sent_by", "note"])
        Slot.objects.bulk_create(slots_for([(item.pk, item.round, item.labels_needed)]))
    return item


# --- claims -------------------------------------------------------------------------------------------------------


def _lease(now: datetime) -> datetime:
    return now + timedelta(seconds=settings.GUARDTRACE_EXPERT_LEASE_S)


def _next_slot(user, now: datetime) -> Slot | None:
    """Claim the first free slot for `user` in one statement: UPDATE … WHERE id = (SELECT … LIMIT 1 FOR UPDATE
    SKIP LOCKED) AND <still free>. SKIP LOCKED hands concurrent claimers different rows on PostgreSQL; the
    condition repeated in the UPDATE is what makes the claim safe on every backend (SQLite ignores the lock)."""
    # Lapsed leases first (their items are oldest), then open slots in queue order.
    for expired in (True, False):
        free = (
            Q(status=Slot.Status.CLAIMED, lease_expires_at__lt=now) if expired else Q(status=Slot.Status.OPEN)
        )
        candidates = claimable_slots(user=user).filter(free)
        candidates = (
            candidates.order_by("lease_expires_at") if expired else candidates.order_by("item_id", "index")
        )
        if expired and not candidates.exists():  # the usual case: a cheap look, no transaction
            continue
        for _ in range(20):
            with transaction.atomic():
                first = candidates.select_for_update(skip_locked=True, of=("self",)).values("pk")[:1]
                # `id = (scalar subquery)`, evaluated once; `id IN (…)` may be re-run per row and claim several.
                taken = Slot.objects.filter(free, pk=Subquery(first)).update(
                    status=Slot.Status.CLAIMED,
                    expert=user,
                    claim_token=secrets.token_hex(16),
                    claimed_at=now,
                    lease_expires_at=_lease(now),
                )
            if taken:
                return expert_slot_current(user=user)
            if not candidates.exists():
                break
    return None


def expert_slot_current(*, user) -> Slot | None:
    """The slot the expert holds, with what the labelling page shows (one claim per expert at most)."""
    return (
        Slot.objects.select_related("item__sample__image")
        .filter(expert=user, status=Slot.Status.CLAIMED)
        .first()
    )


def expert_slot_claim(*, user, now: datetime | None = None) -> Slot | None:
    """The expert's current claim (its lease renewed), or the next free slot claimed for them; None when nothing
    is left for them. Raises DailyCapReached when they have seen their daily number of items."""
    now = now or timezone.now()
    held = expert_slot_current(user=user)
    if held is not None:
        # Renewed only while still theirs (a lapsed lease may have just been taken over).
        until = _lease(now)
        mine = _mine(held.pk, user, held.claim_token)
        if mine.update(lease_expires_at=until):
            held.lease_expires_at = until
            return held
    cap = settings.GUARDTRACE_EXPERT_DAILY_CAP
    if items_seen_today(user=user, now=now) >= cap:
        raise DailyCapReached(
            f"You have seen {cap} items today, the daily limit (GUARDTRACE_EXPERT_DAILY_CAP). Take a break."
        )
    try:
        return _next_slot(user, now)
    except IntegrityError:
        # Another tab of the same expert claimed at the same moment (one claim per expert): share it.
        return expert_slot_current(user=user)


def _mine(slot_id: int, user, token: str):
    return Slot.objects.filter(pk=slot_id, expert=user, claim_token=token, status=Slot.Status.CLAIMED)


def _release(slot_id: int, user, token: str) -> int:
    """Return the expert's claimed slot to the queue; 1 if it was still theirs."""
    return _mine(slot_id, user, token).update(
        status=Slot.Status.OPEN, expert=None, claim_token="", claimed_at=None, lease_expires_at=None
    )


def _lost(slot_id: int, user) -> ClaimLost:
    slot = Slot.objects.filter(pk=slot_id).first()
    if slot is None:
        return ClaimLost("This item has left the expert queue.")
    if slot.status == Slot.Status.SUBMITTED and slot.expert_id == user.pk:
        return ClaimLost("Your label for this item was already submitted; it was not stored twice.")
    return ClaimLost("Your claim on this item has ended (skipped, or expired and taken by another expert).")


def expert_slot_renew(*, slot_id: int, user, token: str, now: datetime | None = None) -> datetime:
    """Extend the lease while the page is open; the new expiry."""
    until = _lease(now or timezone.now())
    if not _mine(slot_id, user, token).update(lease_expires_at=until):
        raise _lost(slot_id, user)
    return until


def expert_slot_skip(*, slot_id: int, user, token: str) -> None:
    """Give the slot back; the item is not offered to this expert again this round."""
    with transaction.atomic():
        slot = _mine(slot_id, user, token).select_related("item").first()
        if slot is None:
            raise _lost(slot_id, user)
        if not _release(slot_id, user, token):
            raise _lost(slot_id, user)
        ExpertSkip.objects.get_or_create(item_id=slot.item_id, round=slot.round, expert=user)
        AuditEvent.objects.create(
            user=user, action=AuditEvent.Action.SKIP, sample_id=slot.item.sample_id, detail={"slot": slot_id}
        )


# --- labels and decisions -----------------------------------------------------------------------------------------


def _check(submission: ExpertSubmission, steps: int) -> None:
    if submission.judgment not in JUDGMENTS:
        raise ReviewError(f"{submission.judgment!r} is not one of 0, 0.5, 1", "judgment")
    if not submission.analysis.strip():
        raise ReviewError("write an analysis, or start from a juror's", "analysis")
    step = submission.first_harmful_step
    if step is not None and not 1 <= step <= steps:
        raise ReviewError(f"{step} is not a step of this reasoning (1–{steps})", "first_harmful_step")
    if step is not None and submission.judgment == 0:
        raise ReviewError("a step is marked harmful but the judgment is 0 (safe)", "first_harmful_step")


def expert_label_submit(
    *, slot_id: int, user, token: str, submission: ExpertSubmission, now: datetime | None = None
) -> Label:
    """Store an expert's label for their claimed slot, in one transaction; decide the item when it has K labels."""
    now = now or timezone.now()
    slot = Slot.objects.select_related("item__sample").filter(pk=slot_id).first()
    if slot is None:
        raise ClaimLost("This item has left the expert queue.")
    sample = slot.item.sample
    _check(submission, len(reasoning_steps(sample.thinking)))
    try:
        return _submit(slot, user, token, submission, now)
    except IntegrityError as exc:
        # The one-label-per-expert-and-round constraint: they already labelled this item in this round. Give the
        # slot back, so that it goes to someone else and their next claim does not resume it.
        _release(slot_id, user, token)
        raise ClaimLost(
            "You have already labelled this item in this round; it was not stored twice."
        ) from exc


def _submit(slot: Slot, user, token: str, submission: ExpertSubmission, now: datetime) -> Label:
    slot_id, sample = slot.pk, slot.item.sample
    with transaction.atomic():
        # Lock order sample → item → slot, as stratification does (sample → item): no deadlock between them.
        Sample.objects.select_for_update(no_key=True).filter(pk=sample.pk).first()
        item = Item.objects.select_for_update().get(pk=slot.item_id)
        if not _mine(slot_id, user, token).update(
            status=Slot.Status.SUBMITTED, submitted_at=now, lease_expires_at=None
        ):
            raise _lost(slot_id, user)
        seconds = (now - slot.claimed_at).total_seconds() if slot.claimed_at else None
        label = Label.objects.create(
            sample=sample,
            source_kind=Label.SourceKind.EXPERT,
            source_name=user.get_username(),
            prompt_version=expert_round_key(slot.round),
            judgment=submission.judgment,
            analysis=submission.analysis.strip(),
            meta={
                "slot": slot.pk,
                "round": slot.round,
                "first_harmful_step": submission.first_harmful_step,
                "prefilled_from": submission.prefilled_from,
                "seconds": seconds,
            },
            created_by=user,
            created_at=now,
        )
        Slot.objects.filter(pk=slot.pk).update(label=label)
        AuditEvent.objects.create(user=user, action=AuditEvent.Action.LABEL_WRITE, sample=sample, label=label)
        # Until the item is decided, an expert label cannot change the sample's stratum or training label.
        if _decide_if_complete(item, now):
            strata.stratify(sample_ids=[sample.pk])
    return label


def expert_label_revise(*, slot_id: int, user, submission: ExpertSubmission) -> Label:
    """Change an expert's own submitted label while its round is still open (not all K labels in, so not decided
    and not in adjudication). The label keeps its place among the K; the change is written to the audit log with
    what it replaced."""
    slot = Slot.objects.select_related("item__sample", "label").filter(pk=slot_id, expert=user).first()
    if slot is None or slot.label is None:
        raise ReviewError("You have no submitted label on this item.")
    _check(submission, len(reasoning_steps(slot.item.sample.thinking)))
    with transaction.atomic():
        Sample.objects.select_for_update(no_key=True).filter(pk=slot.item.sample_id).first()
        item = Item.objects.select_for_update().get(pk=slot.item_id)
        label = Label.objects.select_for_update().get(pk=slot.label.pk)
        slot.item = item
        if not slot.revisable:
            raise ReviewError(
                f"Item #{item.pk} is {item.get_status_display().lower()}: its labels can no longer be revised."
            )
        before = {"judgment": label.judgment, "first_harmful_step": label.meta.get("first_harmful_step")}
        label.judgment = submission.judgment
        label.analysis = submission.analysis.strip()
        label.meta = {
            **label.meta,
            "first_harmful_step": submission.first_harmful_step,
            "revisions": label.meta.get("revisions", 0) + 1,
        }
        label.save(update_fields=["judgment", "analysis", "meta", "updated_at"])
        AuditEvent.objects.create(
            user=user,
            action=AuditEvent.Action.LABEL_WRITE,
            sample_id=item.sample_id,
            label=label,
            detail={"revised": True, "slot": slot.pk, "before": before},
        )
    return label


def _decide_if_complete(item: Item, now: datetime) -> bool:
    """Decide the item when its round has K labels; True when it now has a (new) decision."""
    labels = list(
        Label.objects.filter(expert_slot__item=item, expert_slot__round=item.round).order_by(
            "created_at", "id"
        )
    )
    if len(labels) < item.labels_needed:
        return False
    value = majority([label.judgment for label in labels])  # type: ignore[misc]
    if value is None:
        item.status = ReviewStatus.ADJUDICATION
        item.save(update_fields=["status"])
        return False
    item.status = ReviewStatus.DONE
    item.decision = value
    item.decision_analysis = next(label.analysis for label in labels if label.judgment == value)
    item.decided_by, item.decided_at, item.adjudicator = Item.DecidedBy.MAJORITY, now, None
    item.save(
        update_fields=["status", "decision", "decision_analysis", "decided_by", "decided_at", "adjudicator"]
    )
    return True


def expert_item_adjudicate(*, item_id: int, user, judgment: float, analysis: str, note: str = "") -> Item:
    """An admin's decision for an item whose K expert labels had no majority."""
    if judgment not in JUDGMENTS:
        raise ReviewError(f"{judgment!r} is not one of 0, 0.5, 1", "judgment")
    if not analysis.strip():
        raise ReviewError("the decision needs an analysis (start from an expert's)", "analysis")
    with transaction.atomic():
        sample_id = Item.objects.filter(pk=item_id).values_list("sample_id", flat=True).first()
        if sample_id is None:
            raise ReviewError(f"no expert queue item #{item_id}")
        Sample.objects.select_for_update(no_key=True).filter(pk=sample_id).first()
        item = Item.objects.select_for_update().get(pk=item_id)
        if item.status != ReviewStatus.ADJUDICATION:
            raise ReviewError(
                f"item #{item_id} is {item.get_status_display().lower()}, not waiting for adjudication"
            )
        item.status, item.decision, item.decision_analysis = ReviewStatus.DONE, judgment, analysis.strip()
        item.decided_by, item.adjudicator, item.adjudication_note = Item.DecidedBy.ADJUDICATION, user, note
        item.decided_at = timezone.now()
        item.save()
        AuditEvent.objects.create(
            user=user,
            action=AuditEvent.Action.ADJUDICATE,
            sample_id=sample_id,
            detail={"item": item.pk, "round": item.round, "judgment": judgment},
        )
        strata.stratify(sample_ids=[sample_id])
    return item


def expert_reliability_draw(*, n: int, seed: int, user) -> int:
    """Send n random jury-labelled (D3:0 / D2:1) samples not yet in the queue to experts: the paper's check of
    the jury's labels against experts (150 items there). Returns how many were sent."""

    if n < 1:
        raise ReviewError("draw at least one item", "n")
    pool = list(
        Sample.objects.filter(stratum__in=[Stratum.D3_0, Stratum.D2_1], expert_queue_item__isnull=True)
        .order_by("id")
        .values_list("id", flat=True)
    )
    if not pool:
        raise ReviewError("no jury-labelled samples (D3:0 or D2:1) outside the expert queue to draw from")
    chosen = random.Random(seed).sample(pool, min(n, len(pool)))
    for sample in Sample.objects.filter(pk__in=chosen):
        expert_queue_send(
            sample=sample, user=user, reason=Item.Reason.RELIABILITY, note=f"reliability draw, seed {seed}"
        )
    return len(chosen)


# --- reviewers ----------------------------------------------------------------------------------------------------


def review_decision_record(
    *, sample: Sample, guard_name: str, verdict: str, user, note: str = ""
) -> ReviewDecision:
    """A reviewer's call on a guard/label disagreement. "Label is wrong" and "unclear" send the sample to the
    expert queue; "guard is wrong" makes it a hard-negative candidate for the refined DPO round."""
    if verdict not in ReviewDecision.Verdict.values:
        raise ReviewError(f"{verdict!r} is not one of {', '.join(ReviewDecision.Verdict.values)}", "verdict")
    guard = (
        Label.objects.filter(
            sample=sample,
            source_kind=Label.SourceKind.GUARD,
            source_name=guard_name,
            status=Label.Status.VALID,
        )
        .order_by("-created_at", "-id")
        .first()
    )
    sample.refresh_from_db()
    if guard is None or sample.final_label is None:
        raise ReviewError(
            f"sample #{sample.pk} has no guard judgment from {guard_name!r} and training label to compare"
        )
    with transaction.atomic():
        decision = ReviewDecision.objects.create(
            sample=sample,
            verdict=verdict,
            guard_name=guard_name,
            guard_label=guard,
            guard_judgment=cast(float, guard.judgment),
            label_judgment=sample.final_label,
            label_origin=sample.final_label_origin,
            note=note,
            reviewer=user,
        )
        queued = None
        if verdict != ReviewDecision.Verdict.GUARD_WRONG:
            queued = _queue_state(sample)
            expert_queue_send(
                sample=sample, user=user, note=f"{decision.get_verdict_display()}: {note}".strip(": ")
            )
        AuditEvent.objects.create(
            user=user,
            action=AuditEvent.Action.REVIEW,
            sample=sample,
            # What the call did to the expert queue, so that it can be undone: the item as it was before.
            detail={"verdict": verdict, "decision": decision.pk, "queue_before": queued},
        )
    return decision


_QUEUE_FIELDS = ("status", "round", "reason", "sent_by_id", "note", "labels_needed")


def _queue_state(sample: Sample) -> dict | None:
    item = Item.objects.filter(sample=sample).values(*_QUEUE_FIELDS).first()
    return {"absent": True} if item is None else item


def review_decision_undo(*, decision_id: int, user) -> ReviewDecision:
    """Take back the reviewer's last call: the decision goes, and a sample it sent to the experts leaves their
    queue again (a new item is removed, a new round closed), provided no expert has started on it."""
    with transaction.atomic():
        decision = ReviewDecision.objects.select_for_update().filter(pk=decision_id, reviewer=user).first()
        if decision is None:
            raise ReviewError("That call is not yours, or was already undone.")
        latest = ReviewDecision.objects.filter(reviewer=user).order_by("-at", "-id").values_list("pk").first()
        if latest != (decision.pk,):
            raise ReviewError("Only your last call can be undone.")
        event = (
            AuditEvent.objects.filter(action=AuditEvent.Action.REVIEW, detail__decision=decision.pk)
            .order_by("-at")
            .first()
        )
        before = (event.detail.get("queue_before") if event else None) or {}
        Sample.objects.select_for_update(no_key=True).filter(pk=decision.sample_id).first()
        item = Item.objects.select_for_update().filter(sample_id=decision.sample_id).first()
        if item is not None and before and before.get("status") != ReviewStatus.OPEN:
            round_slots = Slot.objects.filter(item=item, round=item.round)
            if round_slots.exclude(status=Slot.Status.OPEN).exists():
                raise ReviewError(
                    f"An expert has already started on sample #{decision.sample_id}: the call stays."
                )
            if before.get("absent"):
                item.delete()
            else:
                round_slots.delete()
                for name in _QUEUE_FIELDS:
                    setattr(item, name, before[name])
                item.save(update_fields=[name.removesuffix("_id") for name in _QUEUE_FIELDS])
        AuditEvent.objects.create(
            user=user,
            action=AuditEvent.Action.REVIEW,
            sample_id=decision.sample_id,
            detail={"undo": decision.pk, "verdict": decision.verdict},
        )
        decision.delete()
    return decision
