"""The experts' product: the queue of samples the jury split 1:1:1 (or a reviewer sent), the K blind slots of each
review round, skips, decisions and adjudication; and the reviewers' calls where the guard and the training label
disagree. The tables kept their names when these models left `annotation`."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from annotation.models import JUDGMENT_CHOICES, LabelOrigin, Sample
from qta.protocol import JUDGMENTS


class ReviewStatus(models.TextChoices):
    OPEN = "open", "Waiting for expert labels"
    ADJUDICATION = "adjudication", "Needs adjudication"
    DONE = "done", "Decided"


class ExpertQueueItem(models.Model):
    """A sample waiting for K blind expert labels: the jury split 1:1:1, or a reviewer sent it.

    Each review round has K slots (`ExpertSlot`); when all K labels are in, their majority is the decision, and
    with no majority an admin adjudicates. A reviewer who disputes a decision opens a new round."""

    class Reason(models.TextChoices):
        JURY_SPLIT = "jury_split", "Jury split 1:1:1"
        REVIEWER = "reviewer", "Sent by a reviewer"
        RELIABILITY = "reliability", "Reliability check of the jury"

    class DecidedBy(models.TextChoices):
        NONE = "", "Undecided"
        MAJORITY = "majority", "Expert majority"
        ADJUDICATION = "adjudication", "Adjudication"

    Status = ReviewStatus

    sample = models.OneToOneField(Sample, on_delete=models.CASCADE, related_name="expert_queue_item")
    reason = models.CharField(max_length=16, choices=Reason.choices)
    prompt_version = models.CharField(max_length=32, blank=True, help_text="Jury prompt version that split.")
    status = models.CharField(max_length=12, choices=ReviewStatus.choices, default=ReviewStatus.OPEN)
    round = models.PositiveSmallIntegerField(
        default=1, help_text="Review round; a reviewer's dispute opens the next."
    )
    labels_needed = models.PositiveSmallIntegerField(
        default=3, help_text="K: expert labels this round needs."
    )
    decision = models.FloatField(null=True, blank=True, choices=JUDGMENT_CHOICES)
    decision_analysis = models.TextField(
        blank=True, help_text="Analysis that goes with the decision (training)."
    )
    decided_by = models.CharField(max_length=12, choices=DecidedBy.choices, default="", blank=True)
    adjudicator = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    adjudication_note = models.TextField(blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    sent_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    note = models.TextField(blank=True, help_text="Why a reviewer sent it.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "annotation_expertqueueitem"  # moved from annotation with its rows
        ordering = ["id"]
        indexes = [models.Index(fields=["status", "id"])]
        constraints = [
            models.CheckConstraint(
                condition=Q(decision__isnull=True) | Q(decision__in=JUDGMENTS), name="expert_decision_valid"
            ),
            models.CheckConstraint(condition=Q(labels_needed__gte=1), name="expert_labels_needed_positive"),
        ]

    def __str__(self) -> str:
        return f"expert queue: sample #{self.sample_id}"


def expert_round_key(review_round: int) -> str:
    """The prompt_version of expert labels given in a review round, so an expert may label again next round."""
    return f"expert-round-{review_round}"


class ExpertSlot(models.Model):
    """One of the K labels an item needs in a round. Claimed by one expert at a time, as a lease that expires."""

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        CLAIMED = "claimed", "Claimed"
        SUBMITTED = "submitted", "Submitted"

    item = models.ForeignKey(ExpertQueueItem, on_delete=models.CASCADE, related_name="slots")
    round = models.PositiveSmallIntegerField()
    index = models.PositiveSmallIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    expert = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="expert_slots",
    )
    claim_token = models.CharField(max_length=32, blank=True, help_text="Changes on every claim.")
    claimed_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    label = models.OneToOneField(
        "annotation.Label", null=True, blank=True, on_delete=models.SET_NULL, related_name="expert_slot"
    )

    class Meta:
        db_table = "annotation_expertslot"
        ordering = ["item_id", "round", "index"]
        indexes = [
            # The next open slot, in queue order.
            models.Index(fields=["item", "index"], condition=Q(status="open"), name="expert_slot_open"),
            # Abandoned leases, oldest first.
            models.Index(
                fields=["lease_expires_at"], condition=Q(status="claimed"), name="expert_slot_claimed"
            ),
            models.Index(fields=["expert", "submitted_at"]),
        ]
        constraints = [
            models.UniqueConstraint(fields=["item", "round", "index"], name="one_slot_per_index"),
            # Blind overlap: K different experts per item and round.
            models.UniqueConstraint(
                fields=["item", "round", "expert"],
                condition=Q(expert__isnull=False),
                name="one_slot_per_expert",
            ),
            # An expert works on one item at a time (two tabs share it).
            models.UniqueConstraint(
                fields=["expert"], condition=Q(status="claimed"), name="one_claim_per_expert"
            ),
            models.CheckConstraint(
                # A submitted slot keeps its label when the expert's account is deleted.
                condition=Q(status="open", expert__isnull=True)
                | Q(status="claimed", expert__isnull=False)
                | Q(status="submitted"),
                name="expert_slot_holder_matches_status",
            ),
        ]

    def __str__(self) -> str:
        return f"slot {self.index + 1} of {self.item} (round {self.round})"

    @property
    def revisable(self) -> bool:
        """A submitted label may be changed by its expert until the item's round is decided (or adjudicated)."""
        return (
            self.status == self.Status.SUBMITTED
            and self.item.status == ReviewStatus.OPEN
            and self.item.round == self.round
        )


class ExpertSkip(models.Model):
    """An expert passed on an item in a round; it is not offered to them again that round."""

    item = models.ForeignKey(ExpertQueueItem, on_delete=models.CASCADE, related_name="skips")
    round = models.PositiveSmallIntegerField()
    expert = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "annotation_expertskip"
        constraints = [models.UniqueConstraint(fields=["item", "round", "expert"], name="one_skip_per_round")]
        indexes = [models.Index(fields=["expert", "at"])]


class ReviewDecision(models.Model):
    """A reviewer's call on a sample where the guard and the training label disagree."""

    class Verdict(models.TextChoices):
        GUARD_WRONG = "guard_wrong", "Guard is wrong (hard negative)"
        LABEL_WRONG = "label_wrong", "Label is wrong (back to experts)"
        UNCLEAR = "unclear", "Unclear (to experts)"

    sample = models.ForeignKey(Sample, on_delete=models.CASCADE, related_name="review_decisions")
    verdict = models.CharField(max_length=12, choices=Verdict.choices)
    guard_name = models.CharField(max_length=64, help_text="The guard checkpoint judged.")
    guard_label = models.ForeignKey(
        "annotation.Label", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="The guard's output: the rejected side of a hard-negative pair.",
    )  # fmt: skip
    guard_judgment = models.FloatField(choices=JUDGMENT_CHOICES)
    label_judgment = models.FloatField(choices=JUDGMENT_CHOICES, help_text="Training label at the time.")
    label_origin = models.CharField(max_length=16, choices=LabelOrigin.choices)
    note = models.TextField(blank=True)
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "annotation_reviewdecision"
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["verdict", "guard_name"]), models.Index(fields=["sample", "-at"])]

    def __str__(self) -> str:
        return f"{self.get_verdict_display()} on sample #{self.sample_id}"


class Guidelines(models.Model):
    """The labelling guidelines shown beside every item (one row, edited by admins in the Django admin)."""

    text = models.TextField(
        blank=True,
        help_text="Plain text; blank lines separate paragraphs. Shown to experts beside each item (key g).",
    )
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        verbose_name = verbose_name_plural = "expert guidelines"

    def __str__(self) -> str:
        return "Expert guidelines"

    @classmethod
    def current(cls) -> Guidelines | None:
        return cls.objects.order_by("pk").first()
