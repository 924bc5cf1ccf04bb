"""The audit API: a deployment sends one QTA sample and gets the guard's judgment back."""

from __future__ import annotations

import base64
import binascii

from django.conf import settings
from django.core import signing
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field, inline_serializer
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from common.permissions import CanAudit
from common.schema import ErrorSerializer
from guardmodel import services
from guardmodel.models import GuardCheckpoint
from qta.engine import READINGS, AuditInput, ImageError, decode_image
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
        help_text="Also report P(harmful) per segment and per reasoning step, and the first unsafe step.",
    )  # fmt: skip
    reading = serializers.ChoiceField(
        list(READINGS), default="analysis",
        help_text="How each prefix is read: `analysis` — the judgment after the guard's own analysis of it (what "
        "judging it would score; one generation per prefix); `cue` — the judgment asked straight away (cheaper, "
        "but a guard trained to analyse first may read every prefix alike).",
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
                        help_text="The scores under the checkpoint's fitted temperature, and whether the guard's "
                        "own P(harmful) (scores.harmful, the scale thresholds are chosen on) reaches the checkpoint's "
                        "threshold (null without one).",
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


def checkpoint_named(name: str) -> tuple[GuardCheckpoint | None, tuple[int, dict] | None]:
    """The checkpoint an audit call names (the active one when it names none), or the answer for its absence: a
    400 on the field for a name that is not there, a 503 when no checkpoint is active."""
    try:
        return services.active_checkpoint(name), None
    except CheckpointError as exc:
        if name:
            return None, (status.HTTP_400_BAD_REQUEST, {"checkpoint": [str(exc)]})
        return None, (status.HTTP_503_SERVICE_UNAVAILABLE, {"detail": str(exc)})


def judge(data: dict) -> tuple[int, dict]:
    """Judge validated audit input with the checkpoint it names (the active one by default): the HTTP status and
    the body, as the audit API answers and the guard playground shows."""
    checkpoint, refusal = checkpoint_named(data["checkpoint"])
    if checkpoint is None:
        return refusal  # type: ignore[return-value]
    item = AuditInput(data["question"], data["thinking"], data["answer"], data.get("image"))
    try:
        verdict = services.audit_on_worker(
            item, checkpoint, data.get("locate", False), data.get("reading", "analysis")
        )
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


# -- incremental audit sessions ------------------------------------------------------------------------------------


class SessionOpenSerializer(serializers.Serializer):
    question = _text()
    reading = serializers.ChoiceField(
        list(READINGS), default="analysis",
        help_text="How the text so far is read at each append: `analysis` (the judgment after the guard's own "
        "analysis; one generation per append) or `cue` (the judgment asked straight away: cheaper).",
    )  # fmt: skip
    image = ImageField(required=False, allow_null=True)
    checkpoint = serializers.SlugField(required=False, allow_blank=True, default="",
                                       help_text="A checkpoint's name; the active one when left out.")  # fmt: skip

    validate_question = staticmethod(_check_length)


class SessionAppendSerializer(serializers.Serializer):
    segment = serializers.ChoiceField(
        ["reasoning", "answer"],
        help_text="Where the text goes: the reasoning, or (once it is done) the answer.",
    )
    text = _text(help_text="The next piece of that segment, exactly as written (added to what came before).")

    validate_text = staticmethod(_check_length)


_RISK: dict[str, serializers.Field] = {
    "levels": serializers.DictField(child=serializers.FloatField()),
    "harmful": serializers.FloatField(),
    "harmful_strict": serializers.FloatField(),
    "threshold": serializers.FloatField(),
    "reading": serializers.ChoiceField(list(READINGS)),
    "crossed": serializers.BooleanField(),
    "first_unsafe_step": serializers.IntegerField(allow_null=True),
    "tokens": serializers.IntegerField(
        allow_null=True, help_text="Tokens the guard holds (null when served)."
    ),
    "latency_ms": serializers.FloatField(),
}
_SESSION_ERRORS = {
    404: OpenApiResponse(ErrorSerializer, description="No open session with this id for this caller."),
    409: OpenApiResponse(ErrorSerializer, description="Reasoning sent after the answer began."),
    502: OpenApiResponse(ErrorSerializer, description="A served guard gave no log-probabilities."),
    410: OpenApiResponse(ErrorSerializer, description="The session expired or was ended; open a new one."),
    413: OpenApiResponse(
        ErrorSerializer, description="The session is past the guard's input or memory limit."
    ),
    504: OpenApiResponse(ErrorSerializer, description="The audit worker holding the session did not answer."),
}


def _session_answer(action: str, *, queue: str, owner: int, **kwargs) -> tuple[int, dict, str]:
    """A session call's HTTP status and body (the worker's answer, its refusal, or a 504 when it did not answer),
    and the node that answered."""
    try:
        answer = services.session_on_worker(action, queue=queue, owner=owner, **kwargs)
    except services.AuditTimeout as exc:
        return status.HTTP_504_GATEWAY_TIMEOUT, {"detail": str(exc)}, ""
    worker = answer.pop("worker", "")
    if "error" in answer:
        return answer["error"]["status"], {"detail": answer["error"]["detail"]}, worker
    return status.HTTP_200_OK, answer, worker


def _session_of(token: str, user) -> dict | None:
    """The session a token names, when it is valid and the caller's own."""
    try:
        held = signing.loads(token, salt=services.SESSION_SALT)
    except signing.BadSignature:
        return None
    if not isinstance(held, dict) or held.get("u") != user.pk:
        return None
    return held


_NOT_OPEN = {"detail": "no open audit session with this id"}


class AuditSessionsApi(APIView):
    """Open an incremental audit: the guard reads a sample as the reasoning model writes it.

    Send the question (and image); then append reasoning text, and the answer, as they are written
    (`POST …/sessions/{session}/append`). Each append answers with the guard's P(harmful) now, the reasoning step the
    text has reached, and whether the threshold is crossed — stop the model there if it is. The session keeps the
    guard's key/value cache on the audit worker that opened it, so an append costs its new tokens only (a served
    checkpoint's server must give log-probabilities and continue a message, as vLLM does; its prefix cache does the
    same); it expires after GUARDTRACE_AUDIT_SESSION_TTL_S without an append. Nothing sent is stored.
    """

    permission_classes = [CanAudit]
    parser_classes = [JSONParser, MultiPartParser, FormParser]
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "audit"

    @extend_schema(
        request=SessionOpenSerializer,
        responses={
            201: inline_serializer(
                "AuditSessionOpened",
                {
                    "session": serializers.CharField(
                        help_text="The session's id, for its append / state URLs."
                    ),
                    "checkpoint": serializers.CharField(),
                    "ttl_s": serializers.FloatField(),
                    "append_url": serializers.CharField(),
                    "segment": serializers.CharField(),
                    **_RISK,
                },
            ),
            400: OpenApiResponse(ErrorSerializer, description="Bad input."),
            502: OpenApiResponse(ErrorSerializer, description="A served guard gave no log-probabilities."),
            503: OpenApiResponse(ErrorSerializer, description="No usable guard checkpoint."),
            504: _SESSION_ERRORS[504],
        },
    )
    def post(self, request):
        serializer = SessionOpenSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        checkpoint, refusal = checkpoint_named(data["checkpoint"])
        if checkpoint is None:
            code, body = refusal  # type: ignore[misc]
            return Response(body, status=code)
        code, answer, worker = _session_answer(
            "open", queue="audit", owner=request.user.pk, checkpoint_id=checkpoint.pk,
            question=data["question"], image=data.get("image"), reading=data["reading"],
        )  # fmt: skip
        if code != status.HTTP_200_OK:
            return Response(answer, status=code)
        held = {
            "s": answer.pop("sid"),
            "q": services.audit_session_queue(worker) if worker else "",
            "u": request.user.pk,
        }
        token = signing.dumps(held, salt=services.SESSION_SALT)
        body = {
            "session": token,
            "checkpoint": checkpoint.name,
            "append_url": reverse("api_audit_session_append", args=[token], request=request),
            **answer,
        }
        return Response(body, status=status.HTTP_201_CREATED)


class AuditSessionApi(APIView):
    """An open incremental audit: where it stands (GET), or close it (DELETE; its last state is answered)."""

    permission_classes = [CanAudit]

    @extend_schema(
        responses={
            200: inline_serializer(
                "AuditSessionState",
                {
                    "segments": serializers.DictField(child=serializers.FloatField(allow_null=True)),
                    "steps": serializers.ListField(child=serializers.FloatField()),
                    "threshold": serializers.FloatField(),
                    "first_unsafe_step": serializers.IntegerField(allow_null=True),
                    "appends": serializers.IntegerField(),
                    "tokens": serializers.IntegerField(allow_null=True),
                    "characters": serializers.DictField(child=serializers.IntegerField()),
                },
            ),
            404: _SESSION_ERRORS[404],
            410: _SESSION_ERRORS[410],
            504: _SESSION_ERRORS[504],
        },
    )
    def get(self, request, session: str):
        return self._call("state", request, session)

    @extend_schema(responses={200: OpenApiTypes.OBJECT, 404: _SESSION_ERRORS[404], 410: _SESSION_ERRORS[410]})
    def delete(self, request, session: str):
        return self._call("close", request, session)

    def _call(self, action: str, request, session: str) -> Response:
        held = _session_of(session, request.user)
        if held is None:
            return Response(_NOT_OPEN, status=status.HTTP_404_NOT_FOUND)
        code, body, _ = _session_answer(action, queue=held["q"], owner=request.user.pk, sid=held["s"])
        return Response(body, status=code)


class AuditSessionAppendApi(APIView):
    """Append reasoning or answer text to an open incremental audit and get the guard's P(harmful) now."""

    permission_classes = [CanAudit]
    parser_classes = [JSONParser, FormParser]
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "audit_append"

    @extend_schema(
        request=SessionAppendSerializer,
        responses={
            200: inline_serializer(
                "AuditSessionAppended",
                {
                    "segment": serializers.CharField(),
                    "step": serializers.IntegerField(allow_null=True),
                    **_RISK,
                },
            ),
            **_SESSION_ERRORS,
        },
    )
    def post(self, request, session: str):
        held = _session_of(session, request.user)
        if held is None:
            return Response(_NOT_OPEN, status=status.HTTP_404_NOT_FOUND)
        serializer = SessionAppendSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        code, body, _ = _session_answer(
            "append", queue=held["q"], owner=request.user.pk, sid=held["s"], **serializer.validated_data
        )
        return Response(body, status=code)
