"""Jury runs over the API: start one over a selection of samples, then poll its progress per juror."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, extend_schema_field, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.models import Split, Stratum
from common.http import MAX_ID
from common.permissions import IsAdminRole
from jury import services
from jury.models import Juror, JuryRun


class JurorProgressOutput(serializers.Serializer):
    name = serializers.CharField(source="juror.name")
    valid = serializers.IntegerField()
    invalid = serializers.IntegerField()
    failed = serializers.IntegerField()
    in_flight = serializers.IntegerField()
    pending = serializers.IntegerField()
    labels_per_second = serializers.SerializerMethodField()
    eta_seconds = serializers.SerializerMethodField()

    def get_labels_per_second(self, progress: services.JurorProgress) -> float:
        return round(progress.per_second, 2)

    def get_eta_seconds(self, progress: services.JurorProgress) -> float | None:
        return None if progress.eta_s is None else round(progress.eta_s, 1)


class WorkerShareOutput(serializers.Serializer):
    worker = serializers.CharField(
        allow_blank=True,
        help_text="The Celery node name whose drivers wrote these results (host:pid outside Celery; empty for "
        "results written before workers were recorded).",
    )
    labels = serializers.IntegerField()
    jurors = serializers.ListField(child=serializers.CharField())
    first_at = serializers.DateTimeField()
    last_at = serializers.DateTimeField()


class JuryRunOutput(serializers.ModelSerializer):
    tasks = serializers.IntegerField(source="total")
    already_labelled = serializers.IntegerField(source="skipped")
    jurors = serializers.SerializerMethodField()
    workers = serializers.SerializerMethodField()

    class Meta:
        model = JuryRun
        fields = ["id", "status", "selection", "prompt_version", "samples", "tasks", "already_labelled",
                  "created_at", "finished_at", "jurors", "workers"]  # fmt: skip

    @extend_schema_field(JurorProgressOutput(many=True))
    def get_jurors(self, run: JuryRun) -> list:
        return list(JurorProgressOutput(services.run_progress(run), many=True).data)

    @extend_schema_field(WorkerShareOutput(many=True))
    def get_workers(self, run: JuryRun) -> list:
        return list(WorkerShareOutput(services.run_workers(run), many=True).data)


class JuryRunCreateApi(APIView):
    """Start a jury run: each selected sample gets one label per juror (default: every enabled juror)."""

    permission_classes = [IsAdminRole]

    @extend_schema_serializer(component_name="JuryRunInput")
    class InputSerializer(serializers.Serializer):
        sample_ids = serializers.ListField(child=serializers.IntegerField(min_value=1, max_value=MAX_ID),
                                           required=False, max_length=1_000_000)  # fmt: skip
        subset = serializers.CharField(required=False)
        split = serializers.ChoiceField(choices=Split.choices, required=False)
        stratum = serializers.ChoiceField(choices=Stratum.choices, required=False)
        category = serializers.CharField(required=False)
        unlabelled = serializers.BooleanField(required=False)
        jurors = serializers.ListField(child=serializers.SlugField(), required=False, allow_empty=False)
        all = serializers.BooleanField(
            required=False, help_text="Every sample: say so, it is never the default."
        )

        def validate(self, data: dict) -> dict:
            chosen = {key for key in data if key != "jurors"} - {"all"}
            if not chosen and not data.get("all"):
                raise serializers.ValidationError(
                    {"selection": ["say which samples: sample_ids, subset, split, stratum, category, unlabelled, "
                                   "or all: true"]}
                )  # fmt: skip
            return data

    @extend_schema(request=InputSerializer, responses={202: JuryRunOutput})
    def post(self, request) -> Response:
        body = self.InputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        data.pop("all", None)
        jurors = None
        if names := data.pop("jurors", None):
            found = {j.name: j for j in Juror.objects.filter(name__in=names)}
            if missing := [n for n in names if n not in found]:
                return Response(
                    {"jurors": [f"no juror named {', '.join(missing)}"]}, status.HTTP_400_BAD_REQUEST
                )
            jurors = [found[n] for n in names]
        try:
            run = services.jury_run_create(selection=data, jurors=jurors, user=request.user)
        except services.JuryError as exc:
            field, _, message = str(exc).partition(": ")
            return Response({field.removeprefix("selection."): [message]}, status.HTTP_400_BAD_REQUEST)
        return Response(JuryRunOutput(run).data, status=status.HTTP_202_ACCEPTED)


class JuryRunDetailApi(APIView):
    @extend_schema(responses=JuryRunOutput)
    def get(self, request, run_id: int) -> Response:
        return Response(JuryRunOutput(get_object_or_404(JuryRun, pk=run_id)).data)
