"""The OpenAPI schema is generated without a warning or an error, and documents the error answers the API gives."""

from __future__ import annotations

import io

import pytest
import yaml
from django.core.management import call_command
from drf_spectacular.drainage import GENERATOR_STATS


@pytest.fixture
def schema(tmp_path) -> dict:
    path = tmp_path / "schema.yml"
    # Warnings count for the whole process: only this generation's may fail the test.
    GENERATOR_STATS.reset()
    # --fail-on-warn raises on any warning or error; --validate checks the result against the OpenAPI spec.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(path), stderr=io.StringIO())
    return yaml.safe_load(path.read_text())


def _operations(schema: dict):
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            yield f"{method.upper()} {path}", operation


def test_the_schema_generates_with_no_warning_and_validates(schema):
    assert schema["openapi"].startswith("3.") and schema["paths"] and not GENERATOR_STATS


def test_each_operation_names_its_own_request_body(schema):
    """Five operations once sent the import job's body (their nested `InputSerializer`s all became `Input`)."""
    bodies: dict[str, set[str]] = {}
    for name, operation in _operations(schema):
        for media in operation.get("requestBody", {}).get("content", {}).values():
            bodies.setdefault(media["schema"]["$ref"].rsplit("/", 1)[-1], set()).add(name)
    shared = {ref: sorted(names) for ref, names in bodies.items() if len(names) > 1}
    # Skipping and renewing a claim both send only its token.
    assert shared == {
        "ExpertSlotToken": [
            "POST /api/v1/expert/slots/{slot_id}/renew",
            "POST /api/v1/expert/slots/{slot_id}/skip",
        ]
    }
    assert "Input" not in bodies


def test_every_error_answer_has_the_error_body(schema):
    error = {"$ref": "#/components/schemas/Error"}
    assert schema["components"]["schemas"]["Error"]["properties"] == {"detail": {"type": "string"}}
    conflicts = 0
    for name, operation in _operations(schema):
        assert {"401", "403"} <= set(operation["responses"]), name
        for code, response in operation["responses"].items():
            if code in {"400", "401", "403", "404", "409", "429", "503"}:
                assert response["content"]["application/json"]["schema"] == error, (name, code)
        conflicts += "409" in operation["responses"]
    # The expert slots' submit, skip and renew, an import's cancel and resume, an export's download and cancel,
    # the request-bound export over its size limit, and reasoning appended to an audit session after its answer.
    assert conflicts == 9


def test_labels_and_expert_judgments_share_one_judgment_enum(schema):
    components = schema["components"]["schemas"]
    assert components["JudgmentEnum"]["enum"] == [0.0, 0.5, 1.0]
    refs = [
        components["LabelInput"]["properties"]["judgment"],
        components["ExpertSubmitInput"]["properties"]["judgment"],
        components["LabelOutput"]["properties"]["judgment"],
    ]
    assert all("#/components/schemas/JudgmentEnum" in str(ref) for ref in refs)
