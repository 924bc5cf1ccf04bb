from __future__ import annotations

import pytest

from annotation.models import Label, LabelOrigin, Stratum
from annotation.services import label_record
from annotation.strata import resolve_labels, stratify
from tests.annotation.factories import SampleFactory


def _label(kind="juror", judgment=0.0, status="valid", version="qta-v1"):
    return Label(source_kind=kind, judgment=judgment, status=status, prompt_version=version)


@pytest.mark.parametrize(
    ("juror_judgments", "stratum", "final", "origin"),
    [
        ([], Stratum.UNLABELLED, None, LabelOrigin.NONE),
        ([1, 1], Stratum.INCOMPLETE, None, LabelOrigin.NONE),
        ([1, 1, None], Stratum.INCOMPLETE, None, LabelOrigin.NONE),
        ([1, 1, 1], Stratum.D3_0, 1.0, LabelOrigin.JURY_CONSENSUS),
        ([0, 0.5, 0], Stratum.D2_1, 0.0, LabelOrigin.JURY_MAJORITY),
        ([0, 0.5, 1], Stratum.D1_1_1, None, LabelOrigin.NONE),
    ],
)
def test_it_stratifies_by_how_the_jury_splits(juror_judgments, stratum, final, origin):
    labels = [_label(judgment=j, status="valid" if j is not None else "invalid") for j in juror_judgments]
    assert resolve_labels(labels) == (stratum, final, origin)


def test_other_prompt_versions_do_not_count():
    labels = [_label(judgment=1, version="qta-v0")] * 3
    assert resolve_labels(labels)[0] == Stratum.UNLABELLED


def test_experts_override_the_jury_and_the_jury_overrides_imported_labels():
    jury = [_label(judgment=1)] * 2 + [_label(judgment=0)]
    assert resolve_labels([*jury, _label("imported", 0)])[1:] == (1.0, LabelOrigin.JURY_MAJORITY)
    assert resolve_labels([*jury, _label("expert", 0), _label("expert", 0)])[1:] == (0.0, LabelOrigin.EXPERT)
    three_way = [_label(judgment=0), _label(judgment=0.5), _label(judgment=1)]
    assert resolve_labels([*three_way, _label("imported", 0.5)])[1:] == (0.5, LabelOrigin.IMPORTED)
    # Two experts disagreeing decide nothing yet.
    assert resolve_labels([*three_way, _label("expert", 0), _label("expert", 1)])[1:] == (
        None,
        LabelOrigin.NONE,
    )


@pytest.mark.django_db
def test_recording_labels_updates_the_sample():
    sample = SampleFactory()
    for name, judgment in (("a", 0.0), ("b", 0.5), ("c", 1.0)):
        label_record(
            sample=sample, source_kind="juror", source_name=name, prompt_version="qta-v1", judgment=judgment
        )
    sample.refresh_from_db()
    assert (sample.stratum, sample.final_label) == (Stratum.D1_1_1, None)
    assert sample.expert_queue_item.reason == "jury_split"  # queued by the write itself
    # Queued, the sample waits for the queue's decision: one expert label from outside the queue decides nothing.
    label_record(sample=sample, source_kind="expert", source_name="erin", judgment=0.5)
    sample.refresh_from_db()
    assert (sample.final_label, sample.final_label_origin) == (None, LabelOrigin.NONE)
    # Not queued, an expert's label is the training label.
    other = SampleFactory()
    label_record(sample=other, source_kind="expert", source_name="erin", judgment=0.5)
    other.refresh_from_db()
    assert (other.final_label, other.final_label_origin) == (0.5, LabelOrigin.EXPERT)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_writers_adding_the_last_labels_at_once_leave_the_sample_stratified():
    """Each writer inserts its label, then resolves; without the row lock both would miss the other's label."""
    import threading

    from django.db import connection, transaction
    from django.utils import timezone

    sample = SampleFactory()
    Label.objects.create(sample=sample, source_kind="juror", source_name="a", prompt_version="qta-v1",
                         judgment=1.0, created_at=timezone.now())  # fmt: skip
    both_inserted = threading.Barrier(2)
    failures = []

    def write(name: str) -> None:
        try:
            with transaction.atomic():
                Label.objects.create(sample_id=sample.pk, source_kind="juror", source_name=name,
                                     prompt_version="qta-v1", judgment=1.0, created_at=timezone.now())  # fmt: skip
                both_inserted.wait(timeout=10)
                stratify(sample_ids=[sample.pk])
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=write, args=(name,)) for name in ("b", "c")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    sample.refresh_from_db()
    assert (sample.stratum, sample.final_label) == ("d3_0", 1.0)
