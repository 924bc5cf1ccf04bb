"""The audit API: a deployment sends one QTA sample and gets the guard's judgment back."""

from __future__ import annotations

import base64
import binascii

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field, inline_serializer
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from common.permissions import CanAudit
from common.schema import ErrorSerializer
from guardmodel import services
from qta.engine import AuditInput, ImageError, decode_image
from qta.loading import CheckpointError


# A file in a multipart body; in JSON, its base64 (a data: URL's prefix allowed).
@extend_schema_field(OpenApiTypes.STR)
class ImageField(serializers.Field):
    """An uploaded file (multipart) or a base64 string (JSON, with or without a data: URL prefix)."""

    default_error_messages = {"invalid": "expected an image file or a base64 string"}

    def to_internal_value(self, data) -> bytes:
        if hasattr(data, "read"):
            if data.size > settings.GUARDTRACE_MAX_IMAGE_BYTES:
                raise serializers.ValidationError(
                    f"image is {data.size} bytes; the limit is {settings.GUARDTRACE_MAX_IMAGE_BYTES}"
                )
            raw = data.read()
        elif isinstance(data, str):
            if data.startswith("data:") and "," not in data:
                raise serializers.ValidationError(
                    "a data: URL needs a comma before its base64 (data:image/png;base64,…)"
                )
            text = data.split(",", 1)[1] if data.startswith("data:") else data
            if len(text) * 3 // 4 > settings.GUARDTRACE_MAX_IMAGE_BYTES:
                raise serializers.ValidationError(
                    f"image is over the limit of {settings.GUARDTRACE_MAX_IMAGE_BYTES} bytes"
                )
            try:
                raw = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raise serializers.ValidationError("image is not valid base64") from None
        else:
            self.fail("invalid")
        try:
            decode_image(raw, max_pixels=settings.GUARDTRACE_MAX_IMAGE_PIXELS)
        except ImageError as exc:
            raise serializers.ValidationError(str(exc)) from None
        return raw

    def to_representation(self, value):  # pragma: no cover - input only
        return None


def _text(**kwargs) -> serializers.CharField:
    return serializers.CharField(trim_whitespace=False, **kwargs)


def _check_length(value: str) -> str:
    limit = settings.GUARDTRACE_AUDIT_MAX_TEXT_CHARS  # read per request: the limit is a setting
    if len(value) > limit:
        raise serializers.ValidationError(
            f"{len(value)} characters; no more than {limit} characters are accepted"
        )
    return value


class AuditInputSerializer(serializers.Serializer):
    question = _text()
    thinking = _text(allow_blank=True, required=False, default="")
    answer = _text(allow_blank=True)
    image = ImageField(required=False, allow_null=True)
    checkpoint = serializers.SlugField(required=False, allow_blank=True, default="",
                                       help_text="A checkpoint name; the active one when left out.")  # fmt: skip
    locate = serializers.BooleanField(
        required=False, default=False,
        help_text="Also report P(harmful) per segment and per reasoning step, and the first unsafe step (local "
        "checkpoints; one more pass per step, reusing the key/value cache).",
    )  # fmt: skip

    validate_question = validate_thinking = validate_answer = staticmethod(_check_length)


class AuditApi(APIView):
    """Judge one Question–Thinking–Answer sample (and its image) with a guard checkpoint.

    Nothing sent here is stored. 400 names the bad field, 503 means no usable checkpoint, 502 that the guard failed,
    504 that the audit worker (which runs local checkpoints, never the web process) did not answer in time.
    """

    permission_classes = [CanAudit]
    parser_classes = [JSONParser, MultiPartParser, FormParser]
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "audit"

    @extend_schema(
        request=AuditInputSerializer,
        responses={
            200: inline_serializer(
                "AuditOutput",
                {
                    "status": serializers.ChoiceField(["valid", "invalid"]),
                    "judgment": serializers.FloatField(allow_null=True),
                    "harmful": serializers.BooleanField(allow_null=True),
                    "analysis": serializers.CharField(),
                    "error": serializers.CharField(),
                    "checkpoint": serializers.CharField(),
                    "prompt_version": serializers.CharField(),
                    "latency_ms": serializers.FloatField(),
                    "truncated_tokens": serializers.IntegerField(),
                    "scores": inline_serializer(
                        "AuditScores",
                        {
                            "levels": serializers.DictField(child=serializers.FloatField()),
                            "harmful": serializers.FloatField(),
                            "harmful_strict": serializers.FloatField(),
                        },
                        allow_null=True,
                        help_text="The guard's own probabilities of each judgment level (P(0), P(0.5), P(1)); "
                        "harmful = P(0.5) + P(1), harmful_strict = P(1). Null where the guard gives none.",
                    ),
                    "calibrated": inline_serializer(
                        "AuditCalibrated",
                        {
                            "levels": serializers.DictField(child=serializers.FloatField()),
                            "harmful": serializers.FloatField(),
                            "temperature": serializers.FloatField(allow_null=True),
                            "threshold": serializers.FloatField(allow_null=True),
                            "flagged": serializers.BooleanField(allow_null=True),
                        },
                        allow_null=True,
                        help_text="The scores under the checkpoint's fitted temperature, and whether P(harmful) "
                        "reaches its threshold (null without one).",
                    ),
                    "located": inline_serializer(
                        "AuditLocated",
                        {
                            "segments": serializers.DictField(child=serializers.FloatField()),
                            "steps": serializers.ListField(child=serializers.FloatField()),
                            "threshold": serializers.FloatField(),
                            "first_unsafe_step": serializers.IntegerField(allow_null=True),
                        },
                        allow_null=True,
                        help_text="With locate: P(harmful) after the question, the reasoning and the answer, after "
                        "each reasoning step, and the first step that reaches the threshold.",
                    ),
                },
            ),
            502: OpenApiResponse(
                inline_serializer(
                    "AuditFailure", {"detail": serializers.CharField(), "checkpoint": serializers.CharField()}
                ),
                description="The guard failed on this input.",
            ),
            503: OpenApiResponse(ErrorSerializer, description="No usable guard checkpoint."),
            504: OpenApiResponse(ErrorSerializer, description="The audit worker did not answer in time."),
        },
    )
    def post(self, request):
        serializer = AuditInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        code, body = judge(serializer.validated_data)
        return Response(body, status=code)


def judge(data: dict) -> tuple[int, dict]:
    """Judge validated audit input with the checkpoint it names (the active one by default): the HTTP status and
    the body, as the audit API answers and the guard playground shows."""
    try:
        checkpoint = services.active_checkpoint(data["checkpoint"])
    except CheckpointError as exc:
        if data["checkpoint"]:
            return status.HTTP_400_BAD_REQUEST, {"checkpoint": [str(exc)]}
        return status.HTTP_503_SERVICE_UNAVAILABLE, {"detail": str(exc)}
    item = AuditInput(data["question"], data["thinking"], data["answer"], data.get("image"))
    try:
        verdict = services.audit_on_worker(item, checkpoint, data.get("locate", False))
    except services.AuditTimeout as exc:
        return status.HTTP_504_GATEWAY_TIMEOUT, {"detail": str(exc)}
    if "checkpoint_error" in verdict:
        return status.HTTP_503_SERVICE_UNAVAILABLE, {
            "detail": f"checkpoint {checkpoint.name}: {verdict['checkpoint_error']}"
        }
    if verdict["status"] == "failed":
        return status.HTTP_502_BAD_GATEWAY, {
            "detail": f"the guard failed: {verdict['error']}",
            "checkpoint": checkpoint.name,
        }
    judgment = verdict["judgment"]
    return status.HTTP_200_OK, {
        "status": verdict["status"],
        "judgment": judgment,
        "harmful": None if judgment is None else judgment >= 0.5,
        "analysis": verdict["analysis"],
        "error": verdict["error"],
        "checkpoint": checkpoint.name,
        "prompt_version": checkpoint.prompt_version,
        "latency_ms": round(verdict["latency_ms"], 1),
        "truncated_tokens": verdict["truncated_tokens"],
        "scores": verdict.get("scores"),
        "located": verdict.get("located"),
        "calibrated": verdict.get("calibrated"),
    }
