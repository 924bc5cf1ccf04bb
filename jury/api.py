"""Jury runs over the API: start one over a selection of samples, then poll its progress per juror."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.models import Split, Stratum
from common.permissions import IsAdminRole
from jury import services
from jury.models import Juror, JuryRun


def run_json(run: JuryRun) -> dict:
    jurors = services.run_progress(run)
    return {
        "id": run.pk,
        "status": run.status,
        "selection": run.selection,
        "prompt_version": run.prompt_version,
        "samples": run.samples,
        "tasks": run.total,
        "already_labelled": run.skipped,
        "created_at": run.created_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "jurors": [
            {
                "name": p.juror.name,
                "valid": p.valid,
                "invalid": p.invalid,
                "failed": p.failed,
                "in_flight": p.in_flight,
                "pending": p.pending,
                "labels_per_second": round(p.per_second, 2),
                "eta_seconds": None if p.eta_s is None else round(p.eta_s, 1),
            }
            for p in jurors
        ],
    }


RunOutput = inline_serializer(
    "JuryRun",
    {
        "id": serializers.IntegerField(),
        "status": serializers.CharField(),
        "selection": serializers.DictField(),
        "samples": serializers.IntegerField(),
        "tasks": serializers.IntegerField(),
        "already_labelled": serializers.IntegerField(),
        "jurors": serializers.ListField(child=serializers.DictField()),
    },
)


class JuryRunCreateApi(APIView):
    """Start a jury run: each selected sample gets one label per juror (default: every enabled juror)."""

    permission_classes = [IsAdminRole]

    class InputSerializer(serializers.Serializer):
        sample_ids = serializers.ListField(child=serializers.IntegerField(min_value=1), required=False,
                                           max_length=1_000_000)  # fmt: skip
        subset = serializers.CharField(required=False)
        split = serializers.ChoiceField(choices=Split.values, required=False)
        stratum = serializers.ChoiceField(choices=Stratum.values, required=False)
        category = serializers.CharField(required=False)
        unlabelled = serializers.BooleanField(required=False)
        jurors = serializers.ListField(child=serializers.SlugField(), required=False, allow_empty=False)

    @extend_schema(request=InputSerializer, responses={202: RunOutput})
    def post(self, request) -> Response:
        body = self.InputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
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
        return Response(run_json(run), status=status.HTTP_202_ACCEPTED)


class JuryRunDetailApi(APIView):
    @extend_schema(responses=RunOutput)
    def get(self, request, run_id: int) -> Response:
        return Response(run_json(get_object_or_404(JuryRun, pk=run_id)))
