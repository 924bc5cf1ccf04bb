"""The OpenAPI schema's error answers: one `Error` component for every 4xx/5xx body the API sends, and the error
statuses each operation can answer, so that generated clients and the schema fuzzer (tests/test_api_fuzz.py)
see the contract the views keep."""

from __future__ import annotations

from drf_spectacular import openapi
from drf_spectacular.extensions import OpenApiSerializerExtension
from rest_framework import serializers
from rest_framework.permissions import AllowAny


class ErrorSerializer(serializers.Serializer):
    """The body of every error answer (common.errors.api_exception_handler and DRF's handler): `detail` for the
    request as a whole, or one entry per field at fault with its messages (nested for list and object fields)."""


class ErrorSchema(OpenApiSerializerExtension):
    target_class = ErrorSerializer

    def get_name(self, auto_schema, direction) -> str:
        return "Error"

    def map_serializer(self, auto_schema, direction) -> dict:
        field_errors = {
            "oneOf": [
                {"type": "array", "items": {"type": "string"}},
                # A list field's errors by index, a nested object's by key.
                {"type": "object", "additionalProperties": True},
            ]
        }
        return {
            "type": "object",
            "description": "`detail` says what is wrong with the request as a whole; otherwise each field at "
            "fault maps to its messages.",
            "properties": {"detail": {"type": "string"}},
            "additionalProperties": field_errors,
        }


# Statuses that any operation of a kind may answer, beyond those its view documents.
BAD_REQUEST, UNAUTHENTICATED, FORBIDDEN, NOT_FOUND, THROTTLED = "400", "401", "403", "404", "429"


class AutoSchema(openapi.AutoSchema):
    """drf-spectacular's schema, plus the error answers that DRF and common.errors give every operation."""

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for code in self._error_statuses():
            if code not in responses:
                responses[code] = self._get_response_for_code(ErrorSerializer, code, direction=direction)
        return responses

    def _error_statuses(self) -> list[str]:
        codes = []
        # A body can be malformed; query parameters (filters, a page) can be bad ones.
        has_body = self.method in ("POST", "PUT", "PATCH") and self.get_request_serializer() is not None
        if has_body or self.get_override_parameters() or self._is_list_view():
            codes.append(BAD_REQUEST)
        if not all(isinstance(permission, AllowAny) for permission in self.view.get_permissions()):
            codes += [UNAUTHENTICATED, FORBIDDEN]
        # An id in the path that names nothing; a page number past the last page.
        if "{" in self.path or self._is_list_view():
            codes.append(NOT_FOUND)
        if self.view.get_throttles():
            codes.append(THROTTLED)
        return codes
