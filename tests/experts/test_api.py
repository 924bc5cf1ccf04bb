"""The expert API's response bodies and their OpenAPI schema: what a labelling tool other than our pages reads."""

from __future__ import annotations

import json
from datetime import UTC

import pytest
from django.urls import reverse

from experts.models import ExpertSlot
from tests.experts.review_helpers import experts, split_items

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("time_zone", ["UTC", "Europe/Berlin"])
def test_renewing_answers_the_new_expiry_in_utc_as_it_always_did(api_for, settings, time_zone):
    settings.TIME_ZONE = time_zone
    split_items(1)
    (erin,) = experts(1)
    api = api_for(erin)
    claimed = api.post(reverse("api_expert_claim")).json()
    renewed = api.post(reverse("api_expert_renew", args=[claimed["slot"]]), {"token": claimed["token"]})
    assert renewed.status_code == 200
    until = ExpertSlot.objects.get(pk=claimed["slot"]).lease_expires_at
    # The body the hand-built dict gave: one field, ISO 8601 in UTC with a "Z", microseconds kept.
    assert renewed.json() == {"lease_expires_at": until.astimezone(UTC).isoformat().replace("+00:00", "Z")}
    lost = api.post(reverse("api_expert_renew", args=[claimed["slot"]]), {"token": "wrong"})
    assert lost.status_code == 409


def test_the_renew_endpoint_documents_its_response(api_for, reviewer_user):
    schema = json.loads(api_for(reviewer_user).get(reverse("api_schema"), {"format": "json"}).content)
    renew = schema["paths"]["/api/v1/expert/slots/{slot_id}/renew"]["post"]["responses"]["200"]
    ref = renew["content"]["application/json"]["schema"]["$ref"]
    component = schema["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    assert component["properties"] == {"lease_expires_at": {"type": "string", "format": "date-time"}}
    assert component["required"] == ["lease_expires_at"]
