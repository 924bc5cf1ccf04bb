"""Ids as attackers send them — a Unicode digit ("²" passes str.isdigit() but not int()), a number past PostgreSQL's
bigint — and an empty jury request: each is a 400 naming the field or is ignored, never a 500, and nothing starts."""

from __future__ import annotations

import pytest
from django.urls import reverse

from jury.models import JuryRun
from tests.annotation.factories import ImageAssetFactory, SampleFactory

pytestmark = pytest.mark.django_db
BAD_IDS = ("²", "١٢", "99999999999999999999999", str(2**63), "-1", "0")


def test_the_label_list_names_a_bad_sample_filter(api_for, reviewer_user):
    SampleFactory()
    api = api_for(reviewer_user)
    for bad in BAD_IDS:
        response = api.get(reverse("api_label_list"), {"sample": bad})
        assert response.status_code == 400, bad
        assert list(response.json()) == ["sample"] and "is not a sample id" in response.json()["sample"][0]


def test_pages_drop_ids_they_cannot_read(client_for, reviewer_user, admin_user):
    image = ImageAssetFactory()
    SampleFactory(image=image)
    reviewer = client_for(reviewer_user)
    for bad in BAD_IDS:
        assert reviewer.get(reverse("image", args=[image.sha256]), {"sample": bad}).status_code == 200, bad
        assert reviewer.get(reverse("evaluation_list"), {"id": bad}).status_code == 200, bad
    admin_user.is_superuser = True
    admin_user.save()
    admin = client_for(admin_user)
    for page in ("admin:generation_seedset_expand", "admin:generation_seedset_generate"):
        for bad in BAD_IDS:
            assert admin.get(reverse(page), {"ids": f"{bad},1"}).status_code == 200, (page, bad)


def test_a_jury_run_is_never_over_every_sample_by_default(api_for, admin_user):
    SampleFactory.create_batch(2)
    api = api_for(admin_user)
    empty = api.post(reverse("api_jury_run_create"), {}, format="json")
    assert empty.status_code == 400 and "all: true" in empty.json()["selection"][0]
    only_jurors = api.post(reverse("api_jury_run_create"), {"jurors": ["a"]}, format="json")
    assert only_jurors.status_code == 400 and "selection" in only_jurors.json()
    huge = api.post(reverse("api_jury_run_create"), {"sample_ids": [2**63]}, format="json")
    assert huge.status_code == 400 and "sample_ids" in huge.json()
    assert not JuryRun.objects.exists()
