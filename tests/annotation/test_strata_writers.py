"""Every writer of labels leaves the strata as `stratify` would: stratum, final label, the D2:1 sample's DPO pair and
the D1:1:1 sample's expert-queue item, with no manual step after an import, an API call or a single label."""

from __future__ import annotations

import random

import pytest
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from annotation import services
from annotation.models import PreferencePair, Sample
from annotation.strata import stratify
from experts.models import ExpertQueueItem, ExpertSlot
from tests.annotation.factories import SampleFactory
from tests.conftest import record, write_jsonl

pytestmark = pytest.mark.django_db


def _strata(sample_ids) -> tuple:
    """What stratifying decides about these samples, as comparable data."""
    samples = Sample.objects.filter(pk__in=sample_ids).order_by("pk")
    return (
        list(samples.values_list("pk", "stratum", "final_label", "final_label_origin")),
        sorted(
            PreferencePair.objects.filter(sample_id__in=sample_ids).values_list(
                "sample_id", "prompt_version", "chosen__source_name", "rejected__source_name"
            )
        ),
        sorted(ExpertQueueItem.objects.filter(sample_id__in=sample_ids).values_list("sample_id", "reason")),
        ExpertSlot.objects.filter(item__sample_id__in=sample_ids).count(),
    )


def _juror(name: str, judgment: float) -> dict:
    return {"source_kind": "juror", "source_name": name, "prompt_version": "qta-v1", "judgment": judgment}


def test_an_imported_three_way_split_is_queued_and_a_two_to_one_split_paired(tmp_path):
    path = write_jsonl(tmp_path / "voted.jsonl", [
        record(question="split three ways", labels=[_juror("a", 0), _juror("b", 0.5), _juror("c", 1)]),
        record(question="split two to one", labels=[_juror("a", 1), _juror("b", 1), _juror("c", 0)]),
    ])  # fmt: skip
    services.samples_import(data=path.read_bytes(), name=path.name, fmt="jsonl")
    three = Sample.objects.get(question="split three ways")
    two = Sample.objects.get(question="split two to one")
    assert (three.stratum, two.stratum) == ("d1_1_1", "d2_1")
    assert list(ExpertQueueItem.objects.values_list("sample_id", "reason")) == [(three.pk, "jury_split")]
    pair = PreferencePair.objects.get()
    assert (pair.sample_id, pair.chosen.source_name, pair.rejected.source_name) == (two.pk, "a", "c")
    before = _strata([three.pk, two.pk])
    report = stratify(sample_ids=[three.pk, two.pk])
    assert (report.changed, report.pairs_created, report.queued) == (0, 0, 0) and _strata(
        [three.pk, two.pk]
    ) == before


def test_juror_labels_posted_to_the_api_pair_the_sample_at_once(api_for, admin_user):
    sample = SampleFactory()
    api = api_for(admin_user)
    for name, judgment in (("a", 0), ("b", 0.5), ("c", 0)):
        body = {"sample": sample.pk, "source_name": name, "prompt_version": "qta-v1", "judgment": judgment}
        response = api.post(reverse("api_label_list"), dict(body, source_kind="juror"), format="json")
        assert response.status_code == 201, response.json()
    pair = PreferencePair.objects.get(sample=sample)
    assert (pair.chosen.source_name, pair.rejected.source_name) == ("a", "b")
    # A fourth vote that turns the split into 2:2 — the pair goes; nothing waits for `manage.py stratify`.
    response = api.post(
        reverse("api_label_list"),
        {
            "sample": sample.pk,
            "source_kind": "juror",
            "source_name": "d",
            "prompt_version": "qta-v1",
            "judgment": 0.5,
        },
        format="json",
    )
    assert response.status_code == 201 and not PreferencePair.objects.filter(sample=sample).exists()


VOTE = st.sampled_from([0.0, 0.5, 1.0, None])  # None: an invalid reply


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    votes=st.lists(st.lists(VOTE, min_size=0, max_size=4), min_size=1, max_size=4),
    imported=st.lists(st.sampled_from([0.0, 0.5, 1.0, None]), min_size=1, max_size=4),
    seed=st.integers(0, 2**16),
)
def test_labels_written_one_by_one_in_any_order_leave_what_stratify_would(votes, imported, seed):
    samples = [SampleFactory() for _ in votes]
    writes = []
    for sample, sample_votes, given_label in zip(samples, votes, imported * len(votes), strict=False):
        writes += [(sample, "juror", f"j{n}", vote) for n, vote in enumerate(sample_votes)]
        if given_label is not None:
            writes.append((sample, "imported", "file", given_label))
    random.Random(seed).shuffle(writes)
    for sample, kind, name, vote in writes:
        services.label_record(
            sample=sample, source_kind=kind, source_name=name, prompt_version="qta-v1" if kind == "juror" else "",
            judgment=vote, status="valid" if vote is not None else "invalid",
        )  # fmt: skip
    ids = [sample.pk for sample in samples]
    written = _strata(ids)
    stratify(sample_ids=ids)
    assert _strata(ids) == written
