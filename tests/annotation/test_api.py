from __future__ import annotations

import base64
import io
import json
import zipfile

import pytest
from django.urls import reverse

from annotation.models import AuditEvent, Label, Sample
from tests.annotation.factories import SampleFactory
from tests.conftest import png_bytes, record

pytestmark = pytest.mark.django_db


def test_the_sample_list_filters_by_subset_split_category_and_stratum(api_for, reviewer_user):
    SampleFactory.create_batch(3, subset="MM-Eval", split="test", category="privacy")
    SampleFactory.create_batch(2, subset="S-Eval-VL")
    api = api_for(reviewer_user)
    body = api.get(reverse("api_sample_list"), {"subset": "MM-Eval", "category": "privacy"}).json()
    assert body["count"] == 3 and {r["split"] for r in body["results"]} == {"test"}
    assert api.get(reverse("api_sample_list"), {"stratum": "d3_0"}).json()["count"] == 0


def test_bulk_create_stores_samples_with_inline_images(api_for, admin_user):
    image = base64.b64encode(png_bytes()).decode()
    body = {
        "samples": [record(image="a.png", label=1), record(question="second")],
        "images": {"a.png": f"data:image/png;base64,{image}"},
    }
    response = api_for(admin_user).post(reverse("api_sample_bulk_create"), body, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["created"] == 2
    detail = (
        api_for(admin_user).get(reverse("api_sample_detail", args=[response.json()["sample_ids"][0]])).json()
    )
    assert detail["image"]["width"] == 16 and detail["labels"][0]["judgment"] == 1.0
    assert detail["final_label_origin"] == "imported"


def test_bulk_create_with_a_bad_record_stores_nothing(api_for, admin_user):
    body = {"samples": [record(), record(category="weapons", question="q2")]}
    response = api_for(admin_user).post(reverse("api_sample_bulk_create"), body, format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == [
        "request:2: category: unknown value 'weapons'; expected one of crime, cybersecurity, privacy, ethics, "
        "health, hate, extremism, advice, other"
    ]
    assert Sample.objects.count() == 0


def test_experts_never_write_a_training_label_around_the_queue(api_for, expert_user, admin_user):
    """A D3:0 sample: the jury agrees on 0. One expert posting 1 — under any prompt version, any number of times —
    must not become its training label (only the blind, K-vote expert queue decides for experts)."""
    sample = SampleFactory()
    admin = api_for(admin_user)
    for name in ("a", "b", "c"):
        body = {"sample": sample.pk, "source_kind": "juror", "source_name": name, "prompt_version": "qta-v1",
                "judgment": 0}  # fmt: skip
        assert admin.post(reverse("api_label_list"), body, format="json").status_code == 201
    sample.refresh_from_db()
    before = (sample.stratum, sample.final_label, sample.final_label_origin)
    assert before[:2] == ("d3_0", 0.0)
    api = api_for(expert_user)
    for version in ("", "qta-v1", "other-v2", "third"):
        body = {"sample": sample.pk, "source_kind": "expert", "prompt_version": version, "judgment": 1,
                "analysis": "Hints at the method."}  # fmt: skip
        response = api.post(reverse("api_label_list"), body, format="json")
        assert response.status_code == 403 and "/api/v1/expert/claim" in response.json()["detail"]
    assert (
        api.post(reverse("api_label_list"), dict(body, source_kind="juror"), format="json").status_code == 403
    )
    sample.refresh_from_db()
    assert (sample.stratum, sample.final_label, sample.final_label_origin) == before
    assert not Label.objects.filter(source_kind="expert").exists()
    assert not AuditEvent.objects.filter(action="label_write", user=expert_user).exists()
    # Admins still write any label; a bad judgment is a 400 naming the field.
    bad = admin.post(reverse("api_label_list"), dict(body, judgment=0.7), format="json")
    assert bad.status_code == 400 and "judgment" in bad.json()
    listed = api.get(reverse("api_label_list"), {"sample": sample.pk}).json()
    assert [label["judgment"] for label in listed["results"]] == [0.0, 0.0, 0.0]


def test_stratum_counts(api_for, reviewer_user):
    SampleFactory.create_batch(2, stratum="d1_1_1")
    counts = api_for(reviewer_user).get(reverse("api_strata")).json()
    assert counts == {"unlabelled": 0, "incomplete": 0, "d3_0": 0, "d2_1": 0, "d1_1_1": 2}


def test_export_returns_a_zip_that_import_reads(api_for, admin_user):
    image = base64.b64encode(png_bytes()).decode()
    api = api_for(admin_user)
    api.post(reverse("api_sample_bulk_create"), {"samples": [record(image="a.png", label=0)], "images": {"a.png": image}},
             format="json")  # fmt: skip
    response = api.get(reverse("api_sample_export"))
    assert response["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    lines = archive.read("samples.jsonl").decode().splitlines()
    exported = json.loads(lines[0])
    assert archive.read(exported["image"]) == png_bytes()
    assert exported["labels"][0]["judgment"] == 0.0


def test_the_openapi_schema_and_docs_are_served(api_for, client_for, reviewer_user):
    schema = api_for(reviewer_user).get(reverse("api_schema"), {"format": "json"})
    assert schema.status_code == 200
    paths = json.loads(schema.content)["paths"]
    assert "/api/v1/samples" in paths and "/api/v1/samples/bulk" in paths and "/api/v1/labels" in paths
    assert all(path.startswith("/api/v1/") for path in paths), sorted(paths)
    browser = client_for(reviewer_user)
    docs = browser.get(reverse("api_docs"))
    assert docs.status_code == 200 and b"swagger-ui" in docs.content and b"cdn" not in docs.content.lower()
    # A browser that is not logged in is sent to the login page, and back to the docs after it.
    browser.logout()
    sent = browser.get(reverse("api_docs"))
    assert sent.status_code == 302 and sent["Location"] == f"{reverse('login')}?next=/api/docs/"
    # A token still opens them.
    assert api_for(reviewer_user).get(reverse("api_docs")).status_code == 200


def test_api_imports_refuse_oversized_uploads_and_non_zip_images(api_for, admin_user, settings):
    from django.core.files.uploadedfile import SimpleUploadedFile

    api = api_for(admin_user)
    line = (json.dumps(record()) + "\n").encode()
    settings.GUARDTRACE_MAX_UPLOAD_BYTES = 10
    big = api.post(
        reverse("api_import_create"), {"file": SimpleUploadedFile("s.jsonl", line)}, format="multipart"
    )
    assert big.status_code == 400 and "upload limit" in big.json()["file"][0]
    settings.GUARDTRACE_MAX_UPLOAD_BYTES = 10_000
    not_zip = api.post(
        reverse("api_import_create"),
        {"file": SimpleUploadedFile("s.jsonl", line), "images": SimpleUploadedFile("i.zip", b"not a zip")},
        format="multipart",
    )
    assert not_zip.status_code == 400 and not_zip.json() == {"images": ["must be a zip archive"]}
    assert not Sample.objects.exists()


@pytest.mark.parametrize(
    ("url", "param"),
    [
        ("api_sample_list", "subset"),
        ("api_sample_export", "subset"),
        ("api_label_list", "source_name"),
        ("api_label_list", "source_kind"),
    ],
)
def test_a_nul_character_in_a_text_filter_is_a_400_naming_it(api_for, admin_user, url, param):
    """Found by the schema fuzzer: PostgreSQL refuses a NUL in a query's text, which was a 500."""
    SampleFactory(subset="unit")
    response = api_for(admin_user).get(reverse(url), {param: "unit\x00"})
    assert response.status_code == 400 and param in response.json()


def test_a_judgment_is_read_as_a_number_however_it_is_spelt(api_for, admin_user):
    """The schema's JudgmentEnum says 0, 0.5, 1: a client sending 1.0 or "0.5" meant the same (1.0 was a 400)."""
    sample = SampleFactory()
    api = api_for(admin_user)
    for judgment, stored in ((1.0, 1.0), ("0.5", 0.5), (0, 0.0)):
        body = {
            "sample": sample.pk,
            "source_kind": "juror",
            "source_name": f"j{stored}",
            "judgment": judgment,
        }
        response = api.post(reverse("api_label_list"), body, format="json")
        assert response.status_code == 201 and response.json()["judgment"] == stored
    for judgment in (2, "one", True, 0.25):
        body = {"sample": sample.pk, "source_kind": "juror", "judgment": judgment}
        response = api.post(reverse("api_label_list"), body, format="json")
        assert response.status_code == 400 and "judgment" in response.json()
