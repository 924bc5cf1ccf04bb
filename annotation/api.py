"""REST API: samples, labels, strata, imports and exports. Token or session auth; roles as on the pages."""

from __future__ import annotations

import base64
import json
import tempfile
import zipfile
from collections.abc import Mapping

from django.conf import settings
from django.http import FileResponse
from django.urls import reverse
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_field,
    extend_schema_serializer,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.generics import ListAPIView
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation import exports, search, selectors, services
from annotation.models import (
    JUDGMENT_CHOICES,
    ExportJob,
    ImportJob,
    InputVariant,
    Label,
    RiskCategory,
    Sample,
    Split,
    Stratum,
)
from common.errors import ApplicationError, Conflict
from common.http import parse_id
from common.permissions import IsAdminRole
from common.roles import is_admin
from common.schema import ErrorSerializer
from qta.images import ImageRejected, ImageSource
from qta.protocol import coerce_judgment
from qta.sample_files import FORMATS, DefaultsRejected, guess_format


class JudgmentField(serializers.ChoiceField):
    """0, 0.5 or 1 as a JSON number however it is spelt (1 and 1.0 alike) or a numeric string; the schema's
    JudgmentEnum, the set the labels' `judgment` answers with."""

    def __init__(self, **kwargs) -> None:
        super().__init__(choices=JUDGMENT_CHOICES, **kwargs)

    # The stubs type a ChoiceField's values as text; these are numbers.
    def to_internal_value(self, data) -> float:  # type: ignore[override]
        judgment = coerce_judgment(data)
        if judgment is None:
            self.fail("invalid_choice", input=data)
        return judgment


class LabelOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = Label
        fields = [
            "id", "sample", "source_kind", "source_name", "prompt_version", "judgment", "analysis",
            "raw_output", "status", "latency_ms", "created_at",
        ]  # fmt: skip


class SampleOutputSerializer(serializers.ModelSerializer):
    image = serializers.SerializerMethodField()

    class Meta:
        model = Sample
        fields = [
            "id", "question", "thinking", "answer", "image", "subset", "split", "category", "input_variant",
            "source_dataset", "generator_model", "external_id", "content_hash", "stratum", "final_label",
            "final_label_origin", "created_at",
        ]  # fmt: skip

    def to_representation(self, sample: Sample) -> dict:
        data = super().to_representation(sample)
        if sample.pk in self.context.get("label_hidden", ()):
            # An expert still deciding this sample sees no training label (it may be imported ground truth).
            data["final_label"], data["final_label_origin"] = None, ""
        return data

    def get_image(self, sample: Sample) -> dict | None:
        if sample.image is None:
            return None
        asset = sample.image
        return {
            "sha256": asset.sha256,
            "width": asset.width,
            "height": asset.height,
            "format": asset.format,
            "url": f"/images/{asset.sha256}/?sample={sample.pk}",
        }


class SampleDetailOutputSerializer(SampleOutputSerializer):
    labels = LabelOutputSerializer(many=True, read_only=True)

    class Meta(SampleOutputSerializer.Meta):
        fields = [*SampleOutputSerializer.Meta.fields, "labels"]


_FILTER_PARAMS = [OpenApiParameter(name, str, description=f"Filter by {name}") for name in selectors.FILTERS]


def _refuse_nul(params, names) -> None:
    """Text filters reach the database, whose text holds no NUL character (PostgreSQL refuses the query): such a
    value is a 400 naming its parameter."""
    for name in names:
        if "\x00" in params.get(name, ""):
            raise ValidationError({name: ["must not contain a NUL character"]})


def _filtered_samples(params):
    _refuse_nul(params, selectors.FILTERS)
    return selectors.sample_list(filters=selectors.clean_filters(params))


_LIST_PARAMS = [
    *_FILTER_PARAMS,
    OpenApiParameter(
        "q",
        str,
        description='Full-text search of question, reasoning and answer: words (all must occur), "a phrase", '
        "`or` between two terms, -word to exclude. Only letters and digits are searched.",
    ),
    OpenApiParameter(
        "sort",
        str,
        enum=[key for key, _, _ in selectors.SORTS],
        description=f"Order (default {selectors.DEFAULT_SORT}).",
    ),
]


class SampleListApi(ListAPIView):
    """Samples matching the filters and the search, `subset=(none)` for those without a subset."""

    serializer_class = SampleOutputSerializer

    @extend_schema(parameters=_LIST_PARAMS)
    def get(self, request, *args, **kwargs):
        with search.index_plans(search.parse(request.query_params.get("q"))):
            return super().get(request, *args, **kwargs)

    def get_serializer(self, *args, **kwargs):
        if args:  # the page's rows: whose training labels this user may not see, in one query
            rows = list(args[0])
            context = kwargs.setdefault("context", self.get_serializer_context())
            context["label_hidden"] = selectors.training_labels_hidden(
                self.request.user, [r.pk for r in rows]
            )
            args = (rows, *args[1:])
        return super().get_serializer(*args, **kwargs)

    def get_queryset(self):
        params = self.request.query_params
        _refuse_nul(params, [*selectors.FILTERS, "q"])
        searched = search.parse(params.get("q"))
        if params.get("q", "").strip() and not searched.active:
            raise ApplicationError(" ".join(searched.notes), field="q")
        sort = params.get("sort") or selectors.DEFAULT_SORT
        if selectors.clean_sort(sort) != sort:
            raise ApplicationError(f"one of {', '.join(key for key, _, _ in selectors.SORTS)}", field="sort")
        return selectors.sample_list(filters=selectors.clean_filters(params), search=searched, sort=sort)


class SampleDetailApi(APIView):
    @extend_schema(responses=SampleDetailOutputSerializer)
    def get(self, request, sample_id: int) -> Response:
        try:
            sample = selectors.sample_detail(sample_id=sample_id)
        except Sample.DoesNotExist:
            raise NotFound(f"no sample #{sample_id}") from None
        hidden = selectors.training_labels_hidden(request.user, [sample.pk])
        data = SampleDetailOutputSerializer(sample, context={"label_hidden": hidden}).data
        # Experts stay blind to other experts' labels on items still being decided.
        visible = selectors.visible_labels(sample.labels.all(), request.user)
        data["labels"] = LabelOutputSerializer(visible, many=True).data
        return Response(data)


class _Base64Images(ImageSource):
    """Images sent inline in a bulk-create body, keyed by the record's `image` name."""

    def __init__(self, images: dict[str, str]) -> None:
        self.images = images

    def read(self, relative: str, *, max_bytes: int) -> bytes:
        encoded = self.images.get(relative)
        if encoded is None:
            raise ImageRejected(f"image {relative!r} is not in the request's `images`")
        if encoded.startswith("data:"):
            encoded = encoded.partition(",")[2]
        if len(encoded) > max_bytes * 4 // 3 + 4:
            raise ImageRejected(f"image {relative!r} is over the {max_bytes:,}-byte limit")
        try:
            return base64.b64decode(encoded, validate=True)
        except ValueError:
            raise ImageRejected(f"image {relative!r} is not valid base64") from None


class SampleBulkCreateApi(APIView):
    """Create samples from records in our JSONL format; validated whole, stored in one transaction."""

    permission_classes = [IsAdminRole]

    @extend_schema_serializer(component_name="SampleBulkInput")
    class InputSerializer(serializers.Serializer):
        samples = serializers.ListField(child=serializers.DictField(), allow_empty=False, max_length=10_000)
        images = serializers.DictField(child=serializers.CharField(), required=False, default=dict)
        skip_invalid = serializers.BooleanField(default=False)

    @extend_schema(
        request=InputSerializer,
        responses={
            201: inline_serializer(
                "SampleBulkCreateResult",
                {
                    "created": serializers.IntegerField(),
                    "sample_ids": serializers.ListField(child=serializers.IntegerField()),
                    "duplicates": serializers.ListField(child=serializers.CharField()),
                    "errors": serializers.ListField(child=serializers.CharField()),
                },
            )
        },
    )
    def post(self, request) -> Response:
        body = self.InputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        lines = "\n".join(json.dumps(record) for record in body.validated_data["samples"])
        try:
            report = services.samples_import(
                data=lines.encode("utf-8"),
                name="request",
                fmt="jsonl",
                images=_Base64Images(body.validated_data["images"]),
                skip_invalid=body.validated_data["skip_invalid"],
                user=request.user,
            )
        except services.ImportRejected as exc:
            return Response(
                {"detail": str(exc), "errors": [str(e) for e in exc.errors]},
                status=status.HTTP_400_BAD_REQUEST,
            )
        data = {
            "created": report.created,
            "sample_ids": report.sample_ids,
            "duplicates": report.duplicates,
            "errors": [str(e) for e in report.errors],
        }
        return Response(data, status=status.HTTP_201_CREATED)


class LabelListCreateApi(ListAPIView):
    """List labels (filter by sample, source_kind, source_name); admins add any. Experts label through the expert
    queue only (`/api/v1/expert/claim`): a label posted here would become a sample's training label on one person's
    word, outside the blind, K-vote queue."""

    serializer_class = LabelOutputSerializer

    @extend_schema_serializer(component_name="LabelInput")
    class InputSerializer(serializers.Serializer):
        sample = serializers.IntegerField()
        source_kind = serializers.ChoiceField(choices=Label.SourceKind.choices)
        source_name = serializers.CharField(max_length=100, required=False)
        prompt_version = serializers.CharField(max_length=32, required=False, allow_blank=True, default="")
        judgment = JudgmentField(allow_null=True, required=False, default=None)
        analysis = serializers.CharField(required=False, allow_blank=True, default="", max_length=1_000_000)
        raw_output = serializers.CharField(required=False, allow_blank=True, default="", max_length=1_000_000)
        status = serializers.ChoiceField(choices=Label.Status.choices, default=Label.Status.VALID)
        latency_ms = serializers.FloatField(required=False, allow_null=True, default=None, min_value=0)

    @extend_schema(
        parameters=[
            OpenApiParameter("sample", int),
            OpenApiParameter("source_kind", str),
            OpenApiParameter("source_name", str),
        ]
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        labels = Label.objects.order_by("id")
        params = self.request.query_params
        _refuse_nul(params, ("source_kind", "source_name"))
        if params.get("sample"):
            if (sample_id := parse_id(params["sample"])) is None:
                raise ValidationError({"sample": [f"{params['sample'][:40]!r} is not a sample id"]})
            labels = labels.filter(sample_id=sample_id)
        for key in ("source_kind", "source_name"):
            if params.get(key):
                labels = labels.filter(**{key: params[key]})
        return selectors.visible_labels(labels, self.request.user)

    @extend_schema(request=InputSerializer, responses={201: LabelOutputSerializer, 404: ErrorSerializer})
    def post(self, request) -> Response:
        if not is_admin(request.user):  # before reading the body: a refusal says nothing about it
            raise PermissionDenied(
                "Only admins write labels here; experts label through the expert queue (POST /api/v1/expert/claim)."
            )
        body = self.InputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        source_name = data.get("source_name") or request.user.get_username()
        try:
            sample = Sample.objects.get(pk=data["sample"])
        except Sample.DoesNotExist:
            raise NotFound(f"no sample #{data['sample']}") from None
        judgment = data["judgment"]
        label = services.label_record(
            sample=sample,
            source_kind=data["source_kind"],
            source_name=source_name,
            prompt_version=data["prompt_version"],
            judgment=judgment,
            analysis=data["analysis"],
            raw_output=data["raw_output"],
            status=data["status"],
            latency_ms=data["latency_ms"],
            user=request.user,
        )
        return Response(LabelOutputSerializer(label).data, status=status.HTTP_201_CREATED)


class StratumCountsApi(APIView):
    @extend_schema(responses={200: {"type": "object", "additionalProperties": {"type": "integer"}}})
    def get(self, request) -> Response:
        return Response(selectors.stratum_counts())


class ImportJobOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = ImportJob
        fields = [
            "id",
            "original_name",
            "images_original_name",
            "format",
            "skip_invalid",
            "split",
            "subset",
            "source_dataset",
            "status",
            "total",
            "done",
            "created",
            "duplicates",
            "errors",
            "error",
            "created_at",
            "started_at",
            "heartbeat_at",
            "finished_at",
            "upload_purged_at",
        ]
        extra_kwargs = {
            "total": {"help_text": "Records in the file (known once it is parsed)."},
            "done": {"help_text": "Records checked so far."},
        }


class ImportJobCreateApi(APIView):
    """Upload a file (and a zip of its images); a worker imports it. Poll the job for the result. `split`, `subset`
    and `source_dataset` apply to every row that gives none of its own."""

    permission_classes = [IsAdminRole]
    parser_classes = [MultiPartParser]

    @extend_schema_serializer(component_name="ImportJobInput")
    class InputSerializer(serializers.Serializer):
        file = serializers.FileField()
        images = serializers.FileField(required=False)
        format = serializers.ChoiceField(choices=FORMATS, required=False)
        skip_invalid = serializers.BooleanField(default=False)
        # Checked by the service (formats.file_defaults), which names the field.
        split = serializers.CharField(required=False, allow_blank=True, default="", trim_whitespace=True)
        subset = serializers.CharField(required=False, allow_blank=True, default="")
        source_dataset = serializers.CharField(required=False, allow_blank=True, default="")

    @extend_schema(request=InputSerializer, responses={202: ImportJobOutputSerializer})
    def post(self, request) -> Response:
        body = self.InputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        limit = settings.GUARDTRACE_MAX_UPLOAD_BYTES
        for field in ("file", "images"):
            if data.get(field) is not None and data[field].size > limit:
                return Response(
                    {field: [f"over the {limit:,}-byte upload limit"]}, status=status.HTTP_400_BAD_REQUEST
                )
        if data.get("images") is not None and not zipfile.is_zipfile(data["images"]):
            return Response({"images": ["must be a zip archive"]}, status=status.HTTP_400_BAD_REQUEST)
        fmt = data.get("format") or guess_format(data["file"].name)
        try:
            job = services.import_job_create(
                data_file=data["file"],
                images_archive=data.get("images"),
                fmt=fmt,
                skip_invalid=data["skip_invalid"],
                user=request.user,
                split=data["split"],
                subset=data["subset"],
                source_dataset=data["source_dataset"],
            )
        except DefaultsRejected as exc:
            return Response({exc.field: [exc.reason]}, status=status.HTTP_400_BAD_REQUEST)
        return Response(ImportJobOutputSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class ImportJobDetailApi(APIView):
    permission_classes = [IsAdminRole]

    @extend_schema(responses=ImportJobOutputSerializer)
    def get(self, request, job_id: int) -> Response:
        return Response(ImportJobOutputSerializer(_import_job(job_id)).data)


class ImportJobResumeApi(APIView):
    """Queue a cancelled, failed or interrupted import again, from the start. 409 when it is queued, running or
    has succeeded."""

    permission_classes = [IsAdminRole]

    @extend_schema(request=None, responses={202: ImportJobOutputSerializer, 409: ErrorSerializer})
    def post(self, request, job_id: int) -> Response:
        job = _import_job(job_id)
        if not services.import_job_resume(job):
            if job.upload_purged_at is not None:
                raise Conflict(f"import #{job_id}'s uploaded files were deleted: upload them again", "status")
            raise Conflict(f"import #{job_id} {job.state}: nothing to resume", "status")
        job.refresh_from_db()
        return Response(ImportJobOutputSerializer(job).data, status=status.HTTP_202_ACCEPTED)


def _import_job(job_id: int) -> ImportJob:
    try:
        return ImportJob.objects.get(pk=job_id)
    except ImportJob.DoesNotExist:
        raise NotFound(f"no import job #{job_id}") from None


class ImportJobCancelApi(APIView):
    """Stop an import: a queued one never starts; a running one stops before it stores anything. 409 when it has
    finished, or had begun storing (then it finishes)."""

    permission_classes = [IsAdminRole]

    @extend_schema(request=None, responses={200: ImportJobOutputSerializer, 409: ErrorSerializer})
    def post(self, request, job_id: int) -> Response:
        job = _import_job(job_id)
        if not services.import_job_cancel(job):
            raise Conflict(f"import #{job_id} {job.state}: nothing to cancel", "status")
        job.refresh_from_db()
        return Response(ImportJobOutputSerializer(job).data)


class SampleExportApi(APIView):
    """A zip of `samples.jsonl` and `images/`, for the samples matching the filters, built inside the request: up to
    GUARDTRACE_EXPORT_INLINE_MAX samples. More is a 409 pointing to `POST /api/v1/exports`, which exports any number
    on the worker."""

    permission_classes = [IsAdminRole]

    @extend_schema(
        parameters=_FILTER_PARAMS, responses={(200, "application/zip"): bytes, 409: ErrorSerializer}
    )
    def get(self, request):
        samples = _filtered_samples(request.query_params)
        limit = settings.GUARDTRACE_EXPORT_INLINE_MAX
        if (count := samples.count()) > limit:
            raise Conflict(
                f"{count:,} samples match: this address exports at most {limit:,} inside the request. "
                "POST /api/v1/exports with the same filters (in the body or the query) exports them on the worker; "
                "poll GET /api/v1/exports/{id} and download GET /api/v1/exports/{id}/download once it has succeeded."
            )
        # Deleted when the response closes it after streaming.
        archive = tempfile.TemporaryFile()  # noqa: SIM115
        exports.samples_export_archive(samples=samples, out=archive, user=request.user)
        archive.seek(0)
        return FileResponse(
            archive, as_attachment=True, filename="guardtrace-export.zip", content_type="application/zip"
        )


class ExportJobOutputSerializer(serializers.ModelSerializer):
    filters = serializers.DictField(child=serializers.CharField(), read_only=True)
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = ExportJob
        fields = [
            "id", "filters", "status", "total", "done", "sample_count", "size_bytes", "error", "created_at",
            "started_at", "heartbeat_at", "finished_at", "archive_purged_at", "download_url",
        ]  # fmt: skip
        extra_kwargs = {
            "total": {"help_text": "Samples matching the filters (known once the export starts)."},
            "done": {"help_text": "Samples written so far."},
        }

    @extend_schema_field(
        serializers.CharField(allow_null=True, help_text="Where to download the zip once done.")
    )
    def get_download_url(self, job: ExportJob) -> str | None:
        return reverse("api_export_download", args=[job.pk]) if job.downloadable else None


class ExportJobCreateApi(APIView):
    """Export the samples matching the filters (all of them without any), with all their labels, as a zip written by
    a worker. The filters are those of `GET /api/v1/samples`, in the JSON body or the query (the body wins). Poll the
    job; once it has succeeded, `download_url` gives the zip."""

    permission_classes = [IsAdminRole]

    @extend_schema_serializer(component_name="ExportJobInput")
    class InputSerializer(serializers.Serializer):
        subset = serializers.CharField(max_length=64, required=False)
        split = serializers.ChoiceField(choices=Split.choices, required=False)
        category = serializers.ChoiceField(choices=RiskCategory.choices, required=False)
        stratum = serializers.ChoiceField(choices=Stratum.choices, required=False)
        input_variant = serializers.ChoiceField(choices=InputVariant.choices, required=False)

    @extend_schema(
        request=InputSerializer, parameters=_FILTER_PARAMS, responses={202: ExportJobOutputSerializer}
    )
    def post(self, request) -> Response:
        given: object = request.data
        if isinstance(given, Mapping):
            # Empty values mean "any", as on the sample list.
            merged = {key: value for key, value in request.query_params.items() if value}
            merged.update((key, value) for key, value in given.items() if value != "")
            given = merged
        body = self.InputSerializer(data=given)
        body.is_valid(raise_exception=True)
        job = exports.export_job_create(filters=dict(body.validated_data), user=request.user)
        return Response(ExportJobOutputSerializer(job).data, status=status.HTTP_202_ACCEPTED)


def _export_job(job_id: int) -> ExportJob:
    try:
        return ExportJob.objects.get(pk=job_id)
    except ExportJob.DoesNotExist:
        raise NotFound(f"no export job #{job_id}") from None


class ExportJobDetailApi(APIView):
    permission_classes = [IsAdminRole]

    @extend_schema(responses=ExportJobOutputSerializer)
    def get(self, request, job_id: int) -> Response:
        return Response(ExportJobOutputSerializer(_export_job(job_id)).data)


class ExportJobDownloadApi(APIView):
    """The export's zip, once it has succeeded; each download is written to the audit log. 409 while it is queued or
    running, when it failed or was cancelled, and once its archive was deleted after the retention time."""

    permission_classes = [IsAdminRole]

    @extend_schema(responses={(200, "application/zip"): bytes, 409: ErrorSerializer})
    def get(self, request, job_id: int):
        job = _export_job(job_id)
        if job.archive_purged_at is not None:
            raise Conflict(f"export #{job_id}'s archive was deleted after the retention time: export again")
        if not job.downloadable:
            raise Conflict(f"export #{job_id} {job.state}: there is no archive to download")
        handle = job.archive.open("rb")
        exports.export_download_record(user=request.user, job=job)
        response = FileResponse(
            handle,
            as_attachment=True,
            filename=f"guardtrace-export-{job_id}.zip",
            content_type="application/zip",
        )
        response["Cache-Control"] = "private, no-store"
        return response


class ExportJobCancelApi(APIView):
    """Stop an export: a queued one never starts, a running one stops within a second and leaves no file. 409 when it
    has finished."""

    permission_classes = [IsAdminRole]

    @extend_schema(request=None, responses={200: ExportJobOutputSerializer, 409: ErrorSerializer})
    def post(self, request, job_id: int) -> Response:
        job = _export_job(job_id)
        if not exports.export_job_cancel(job):
            raise Conflict(f"export #{job_id} {job.state}: nothing to cancel", "status")
        job.refresh_from_db()
        return Response(ExportJobOutputSerializer(job).data)
