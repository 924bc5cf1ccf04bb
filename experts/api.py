"""The expert queue over HTTP, for labelling tools other than our pages (and for the load benchmark).

POST /api/v1/expert/claim                      → 200 the claimed item, 204 nothing left, 429 daily cap reached
POST /api/v1/expert/slots/<id>/submit          → 201 the stored label, 400 a field is wrong, 409 the claim is gone
POST /api/v1/expert/slots/<id>/skip            → 204, 409
POST /api/v1/expert/slots/<id>/renew           → 200 the new expiry, 409
"""

from __future__ import annotations

from datetime import UTC

from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.permissions import BasePermission
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation import selectors as sample_selectors
from annotation.api import JudgmentField, LabelOutputSerializer
from common.roles import is_expert
from common.schema import ErrorSerializer
from experts import selectors
from experts import services as review
from experts.models import ExpertSlot


class IsExpert(BasePermission):
    message = "Only experts label items in the expert queue."

    def has_permission(self, request, view) -> bool:
        return is_expert(request.user)


class SlotOutputSerializer(serializers.Serializer):
    """What an expert needs to label: the slot and its claim token, the sample, and the jury's labels (none on a
    reliability-check item: that check measures the jury against experts who have not seen it)."""

    slot = serializers.IntegerField(source="pk")
    token = serializers.CharField(source="claim_token")
    lease_expires_at = serializers.DateTimeField()
    item = serializers.IntegerField(source="item_id")
    round = serializers.IntegerField()
    index = serializers.IntegerField()
    labels_needed = serializers.IntegerField(source="item.labels_needed")
    sample = serializers.SerializerMethodField()
    jurors = serializers.SerializerMethodField()

    def get_sample(self, slot: ExpertSlot) -> dict:
        sample = slot.item.sample
        return {
            "id": sample.pk,
            "question": sample.question,
            "steps": sample_selectors.reasoning_steps(sample.thinking),
            "answer": sample.answer,
            "image_sha256": sample.image.sha256 if sample.image else None,
        }

    def get_jurors(self, slot: ExpertSlot) -> list[dict]:
        return [
            {
                "name": label.source_name,
                "judgment": label.judgment,
                "status": label.status,
                "analysis": label.analysis,
            }
            for label in selectors.workspace_jurors(slot.item)
        ]


class ExpertClaimApi(APIView):
    permission_classes = [IsExpert]

    @extend_schema(request=None, responses={200: SlotOutputSerializer, 204: None, 429: ErrorSerializer})
    def post(self, request) -> Response:
        slot = review.expert_slot_claim(user=request.user)
        if slot is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(SlotOutputSerializer(slot).data)


@extend_schema_serializer(component_name="ExpertSlotToken")
class _TokenInput(serializers.Serializer):
    token = serializers.CharField(max_length=32)


class ExpertSubmitApi(APIView):
    permission_classes = [IsExpert]

    @extend_schema_serializer(component_name="ExpertSubmitInput")
    class InputSerializer(_TokenInput):
        judgment = JudgmentField()
        analysis = serializers.CharField(max_length=100_000)
        first_harmful_step = serializers.IntegerField(
            required=False, allow_null=True, default=None, min_value=1
        )
        prefilled_from = serializers.CharField(required=False, allow_blank=True, default="", max_length=100)

    @extend_schema(request=InputSerializer, responses={201: LabelOutputSerializer, 409: ErrorSerializer})
    def post(self, request, slot_id: int) -> Response:
        body = self.InputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        submission = review.ExpertSubmission(
            judgment=data["judgment"],
            analysis=data["analysis"],
            first_harmful_step=data["first_harmful_step"],
            prefilled_from=data["prefilled_from"],
        )
        label = review.expert_label_submit(
            slot_id=slot_id, user=request.user, token=data["token"], submission=submission
        )
        return Response(LabelOutputSerializer(label).data, status=status.HTTP_201_CREATED)


class ExpertSkipApi(APIView):
    permission_classes = [IsExpert]

    @extend_schema(request=_TokenInput, responses={204: None, 409: ErrorSerializer})
    def post(self, request, slot_id: int) -> Response:
        body = _TokenInput(data=request.data)
        body.is_valid(raise_exception=True)
        review.expert_slot_skip(slot_id=slot_id, user=request.user, token=body.validated_data["token"])
        return Response(status=status.HTTP_204_NO_CONTENT)


class SlotLeaseOutputSerializer(serializers.Serializer):
    """The claim's new expiry after a renewal."""

    # In UTC whatever TIME_ZONE says ("…Z"), as this endpoint always answered: clients parse it as they did.
    lease_expires_at = serializers.DateTimeField(default_timezone=UTC)


class ExpertRenewApi(APIView):
    permission_classes = [IsExpert]

    @extend_schema(request=_TokenInput, responses={200: SlotLeaseOutputSerializer, 409: ErrorSerializer})
    def post(self, request, slot_id: int) -> Response:
        body = _TokenInput(data=request.data)
        body.is_valid(raise_exception=True)
        until = review.expert_slot_renew(
            slot_id=slot_id, user=request.user, token=body.validated_data["token"]
        )
        return Response(SlotLeaseOutputSerializer({"lease_expires_at": until}).data)
