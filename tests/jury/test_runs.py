"""Jury runs driven in this process against a real OpenAI-compatible server on loopback (through the `openai`
client): labels, strata, preference pairs, the expert queue, re-asks, faults, re-runs, cancel and resume."""

from __future__ import annotations

import pytest
from django.conf import settings as django_settings

from annotation import selectors, strata
from annotation.models import Label, PreferencePair, Sample
from common.models import Lease, lease_acquire
from experts.models import ExpertQueueItem
from guardmodel.services import judge_readable
from jury import services
from jury.models import JuryRun, JuryTask
from tests.loopback import LoopbackOpenAI, closed_port_url


def _drive(jurors) -> int:
    return sum(services.juror_drive(j.pk).written for j in jurors)


def _labels(sample, name=None):
    labels = Label.objects.filter(sample=sample, source_kind="juror")
    return labels.get(source_name=name) if name else labels


def test_a_run_labels_each_sample_once_per_juror_and_sorts_them_into_strata(jury_server, make_jurors, voted):
    jurors = make_jurors(jury_server.url)
    d30, d21, d111, broken = voted("1,1,1", "0,0.5,0", "0,0.5,1", "0,?,0")
    run = services.jury_run_create(selection={}, user=None, enqueue=False)
    assert (run.samples, run.total, run.skipped) == (4, 12, 0)
    assert _drive(jurors) == 12

    run.refresh_from_db()
    assert run.status == "succeeded" and run.finished_at is not None
    assert JuryTask.objects.filter(run=run).exclude(status__in=["valid", "invalid"]).count() == 0
    for sample in (d30, d21, d111, broken):
        assert sorted(_labels(sample).values_list("source_name", flat=True)) == ["a", "b", "c"]
    strata_now = dict(Sample.objects.values_list("pk", "stratum"))
    assert strata_now == {d30.pk: "d3_0", d21.pk: "d2_1", d111.pk: "d1_1_1", broken.pk: "incomplete"}
    d30.refresh_from_db(), d21.refresh_from_db(), d111.refresh_from_db()
    assert (d30.final_label, d30.final_label_origin) == (1.0, "jury_consensus")
    assert (d21.final_label, d21.final_label_origin) == (0.0, "jury_majority")
    assert d111.final_label is None
    # The D2:1 pair: chosen from a majority juror, rejected from the minority one, analyses included.
    pair = PreferencePair.objects.get()
    assert (pair.sample_id, pair.chosen.source_name, pair.chosen.judgment) == (d21.pk, "a", 0.0)
    assert (pair.rejected.source_name, pair.rejected.judgment) == ("b", 0.5)
    assert "juror a weighed" in pair.chosen.analysis and "juror b weighed" in pair.rejected.analysis
    assert list(ExpertQueueItem.objects.values_list("sample_id", "reason")) == [(d111.pk, "jury_split")]
    counts = selectors.dashboard_counts()
    assert {v: n for v, _, n in counts["by_stratum"]} == {"unlabelled": 0, "incomplete": 1, "d3_0": 1, "d2_1": 1,
                                                          "d1_1_1": 1}  # fmt: skip
    assert counts["expert_queue"] == 1
    # Every request: temperature 0, the image as a data URL; usage and latency kept on the label.
    assert all(body["temperature"] == 0 for body in jury_server.requests)
    assert jury_server.images and all(size == (16, 16) for size in jury_server.images)
    label = _labels(d30, "a")
    assert label.meta["prompt_tokens"] == 100 and label.meta["completion_tokens"] == 12
    assert label.latency_ms > 0 and label.meta["run"] == run.pk and label.prompt_version == "qta-v1"


def test_an_unreadable_reply_is_asked_again_once_then_kept_as_invalid(jury_server, make_jurors, voted):
    jurors = make_jurors(jury_server.url)
    recovered, hopeless = voted("?1,0,0", "?,0,0")
    services.jury_run_create(selection={}, enqueue=False)
    _drive(jurors)

    good = _labels(recovered, "a")
    assert (good.status, good.judgment, good.meta["attempts"]) == ("valid", 1.0, 2)
    assert good.meta["first_output"] == "Hmm. Hard to say."
    assert [a["outcome"] for a in good.meta["attempt_log"]] == ["invalid output", "ok"]
    bad = _labels(hopeless, "a")
    assert (bad.status, bad.judgment, bad.raw_output) == ("invalid", None, "Hmm. Hard to say.")
    assert bad.error and bad.meta["first_output"] == "Hmm. Hard to say."
    # The re-ask carried the unreadable reply and the format reminder; no third request was made.
    reasks = [b for b in jury_server.requests if b["model"] == "a" and len(b["messages"]) == 4]
    assert len(reasks) == 2 and reasks[0]["messages"][2]["role"] == "assistant"
    assert len([b for b in jury_server.requests if b["model"] == "a"]) == 4
    assert Sample.objects.get(pk=hopeless.pk).stratum == "incomplete"


def test_server_errors_rate_limits_and_timeouts_are_retried_with_every_attempt_logged(make_jurors, voted):
    from tests.jury.conftest import scripted_vote

    (sample,) = voted("1,1,1")
    with LoopbackOpenAI(scripted_vote(0), faults=[500, 429, "timeout"], hang_s=3) as server:
        (juror,) = make_jurors(server.url, names=["a"], timeout_s=1)
        services.jury_run_create(selection={}, enqueue=False)
        _drive([juror])
    label = _labels(sample, "a")
    assert (label.status, label.judgment, label.meta["attempts"]) == ("valid", 1.0, 4)
    outcomes = [a["outcome"] for a in label.meta["attempt_log"]]
    assert (
        "500" in outcomes[0]
        and "429" in outcomes[1]
        and outcomes[2].startswith("TimedOut:")
        and outcomes[3] == "ok"
    )


def test_calls_that_keep_failing_end_as_failed_labels_and_a_new_run_asks_again(make_jurors, voted, settings):
    from tests.jury.conftest import scripted_vote

    settings.GUARDTRACE_JURY_ATTEMPTS = 3
    samples = voted("1,1,1", "0,0,0")
    (juror,) = make_jurors(closed_port_url(), names=["a"])
    services.jury_run_create(selection={}, enqueue=False)
    _drive([juror])
    failed = _labels(samples[0], "a")
    assert (failed.status, failed.meta["attempts"]) == ("failed", 3) and failed.error.startswith(
        "Unreachable:"
    )

    with LoopbackOpenAI(scripted_vote(0)) as server:
        juror.base_url = server.url
        juror.save()
        second = services.jury_run_create(selection={"stratum": "incomplete"}, enqueue=False)
        assert second.total == 2
        _drive([juror])
    # Replaced, not doubled: one label per sample × juror × prompt version.
    assert Label.objects.filter(source_name="a").count() == 2
    assert set(Label.objects.filter(source_name="a").values_list("status", flat=True)) == {"valid"}


def test_rerunning_asks_nothing_twice_and_restratifying_changes_nothing(jury_server, make_jurors, voted):
    jurors = make_jurors(jury_server.url)
    voted("1,1,1", "0,0.5,0", "0,0.5,1", "1,1,0")
    services.jury_run_create(selection={}, enqueue=False)
    _drive(jurors)
    requests = len(jury_server.requests)
    pairs = list(PreferencePair.objects.order_by("pk").values_list("pk", "chosen_id", "rejected_id"))

    again = services.jury_run_create(selection={}, enqueue=False)
    assert (again.total, again.skipped, again.status) == (0, 12, "succeeded")
    assert _drive(jurors) == 0 and len(jury_server.requests) == requests
    report = strata.stratify_all()
    assert (report.changed, report.pairs_created, report.pairs_updated, report.pairs_removed) == (0, 0, 0, 0)
    assert (report.queued, report.unqueued) == (0, 0)
    assert list(PreferencePair.objects.order_by("pk").values_list("pk", "chosen_id", "rejected_id")) == pairs
    assert Label.objects.count() == 12 and ExpertQueueItem.objects.count() == 1


def test_a_second_driver_finds_the_juror_busy_and_takes_over_once_the_lease_is_gone(
    jury_server, make_jurors, voted
):
    (juror,) = make_jurors(jury_server.url, names=["a"])
    samples = voted(*["1,1,1"] * 6)
    run = services.jury_run_create(selection={}, enqueue=False)
    # A driver that died mid-run: it holds the lease and has claimed half the tasks.
    assert (
        lease_acquire(services._lease_key(juror.pk), "dead", django_settings.GUARDTRACE_JURY_LEASE_S) is None
    )
    JuryTask.objects.filter(pk__in=list(run.tasks.values_list("pk", flat=True)[:3])).update(
        status="claimed", claim_token="dead:1"
    )
    outcome = services.juror_drive(juror.pk)
    assert outcome.written == 0 and 0 < outcome.busy_for <= 30
    # Its lease runs out: the next driver takes the juror and the dead driver's tasks over.
    Lease.objects.filter(key=f"juror:{juror.pk}").update(until="2000-01-01T00:00:00Z")
    assert services.juror_drive(juror.pk).written == 6
    assert Label.objects.filter(source_name="a").count() == 6
    assert set(Label.objects.values_list("sample_id", flat=True)) == {s.pk for s in samples}
    assert Lease.objects.get(key=f"juror:{juror.pk}").token == ""  # released
    assert services.juror_drive(juror.pk + 1000) == services.DriveOutcome()  # a juror deleted meanwhile


def test_a_dead_drivers_juror_is_queued_once_by_the_watch_of_live_workers(jury_server, make_jurors, voted):
    dead, live, free, done = make_jurors(jury_server.url, names=["a", "b", "c", "d"])
    voted("1,1,1,1", "0,0,0,0")
    services.jury_run_create(selection={}, jurors=[dead, live, free], enqueue=False)
    past = "2000-01-01T00:00:00Z"
    for juror, token in ((dead, "dead"), (live, "live"), (done, "gone")):
        assert lease_acquire(services._lease_key(juror.pk), token, 30) is None
    Lease.objects.filter(key__in=[services._lease_key(dead.pk), services._lease_key(done.pk)]).update(
        until=past
    )
    # The dead driver's juror has work left: its lease is given back and a driver queued, once however many look.
    assert services.requeue_orphaned() == [dead.pk]
    assert services.requeue_orphaned() == []
    assert Lease.objects.get(key=services._lease_key(dead.pk)).token == ""
    # A live driver's lease, a lease given back, and a dead driver with no open work are left as they are.
    assert Lease.objects.get(key=services._lease_key(live.pk)).token == "live"
    assert Lease.objects.get(key=services._lease_key(done.pk)).token == "gone"
    assert services.juror_drive(dead.pk).written == 2  # the queued driver takes the juror at once


def test_a_driver_that_lost_its_claim_writes_nothing(jury_server, make_jurors, voted):
    (juror,) = make_jurors(jury_server.url, names=["a"])
    voted("1,1,1", "0,0,0")
    services.jury_run_create(selection={}, enqueue=False)
    stale = services._Driver(juror.pk, "stale")
    items, inputs = stale._claim(10)
    verdicts = judge_readable(services.backend_for_juror(juror), inputs)
    # Meanwhile another driver took the tasks over (the stale one's lease had run out) and finished them.
    JuryTask.objects.update(status="pending", claim_token="")
    assert services.juror_drive(juror.pk).written == 2
    assert stale._flush(list(zip(items, verdicts, strict=True))) == 0
    assert Label.objects.count() == 2


def test_a_cancelled_run_is_not_worked_and_resumes_where_it_stopped(jury_server, make_jurors, voted):
    jurors = make_jurors(jury_server.url)
    voted("1,1,1", "0,0,0")
    run = services.jury_run_create(selection={}, enqueue=False)
    assert services.jury_run_cancel(run) and not services.jury_run_cancel(run)
    assert _drive(jurors) == 0 and Label.objects.count() == 0
    assert services.jury_run_resume(run)
    assert _drive(jurors) == 6
    run.refresh_from_db()
    assert run.status == "succeeded" and not services.jury_run_resume(run)


def test_bad_selections_and_missing_jurors_say_what_is_wrong(make_jurors, voted):
    voted("1,1,1")
    with pytest.raises(services.JuryError, match="^jurors: none enabled"):
        services.jury_run_create(selection={}, enqueue=False)
    jurors = make_jurors("http://127.0.0.1:9/v1")
    jurors[0].is_oracle = True
    jurors[0].save()
    with pytest.raises(services.JuryError, match="^jurors: a is the oracle"):
        services.jury_run_create(selection={}, jurors=jurors, enqueue=False)
    with pytest.raises(services.JuryError, match="^selection.split: 'dev' is not one of train, test"):
        services.jury_run_create(selection={"split": "dev"}, enqueue=False)
    with pytest.raises(services.JuryError, match="^selection: unknown field"):
        services.jury_run_create(selection={"subsett": "x"}, enqueue=False)
    with pytest.raises(services.JuryError, match="^selection: no samples match"):
        services.jury_run_create(selection={"subset": "nowhere"}, enqueue=False)
    assert JuryRun.objects.count() == 0


def test_an_api_key_is_read_from_the_named_environment_variable(make_jurors, voted, monkeypatch):
    from tests.jury.conftest import scripted_vote

    voted("1,1,1")
    with LoopbackOpenAI(scripted_vote(0)) as server:
        (juror,) = make_jurors(server.url, names=["a"], api_key_env="JURY_TEST_KEY")
        services.jury_run_create(selection={}, enqueue=False)
        _drive([juror])  # the variable is unset: the call fails without being made
        label = Label.objects.get()
        assert label.status == "failed" and "JURY_TEST_KEY" in label.error and not server.requests

        monkeypatch.setenv("JURY_TEST_KEY", "sk-test-123")
        services.jury_run_create(selection={}, enqueue=False)
        _drive([juror])
        assert server.authorizations == ["Bearer sk-test-123"]
    assert Label.objects.get().status == "valid"


def test_an_empty_reply_is_asked_again_once_not_until_the_server_relents(make_jurors, voted):
    replies = iter(["", "", "Analysis: finally.\nJudgment: 1"])
    (sample,) = voted("1,1,1")
    with LoopbackOpenAI(lambda body: next(replies)) as server:
        (juror,) = make_jurors(server.url, names=["a"])
        services.jury_run_create(selection={}, enqueue=False)
        _drive([juror])
        assert len(server.requests) == 2
    label = _labels(sample, "a")
    assert (label.status, label.raw_output, label.meta["first_output"]) == ("invalid", "", "")
