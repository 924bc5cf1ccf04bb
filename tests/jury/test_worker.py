"""A jury run through real Celery workers on Redis: killed mid-run (SIGKILL), restarted, and every sample still ends
with exactly one label per juror."""

from __future__ import annotations

import pytest
from django.db.models import Count

from annotation.models import Label, Sample
from jury import services
from jury.models import JuryRun
from tests.conftest import REDIS_URL
from tests.jury.conftest import NAMES, scripted_vote
from tests.loopback import LoopbackOpenAI, by_model
from tests.workers import kill_worker, wait_for, worker

WORKER_ENV = {"GUARDTRACE_JURY_LEASE_S": "3", "GUARDTRACE_JURY_BACKOFF_S": "0.01"}


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_run_loses_and_doubles_nothing_after_a_restart(make_jurors, voted, settings):
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()  # no messages left over from other tests
    voted(*[f"{n % 2},1,{(n // 2) % 2}" for n in range(60)])
    broker = (REDIS_URL, {"visibility_timeout": 3600})
    answers = {name: scripted_vote(i) for i, name in enumerate(NAMES)}
    with LoopbackOpenAI(by_model(answers), delay_s=0.2) as server:
        jurors = make_jurors(server.url, max_concurrency=2)
        with worker(
            *broker, settings.MEDIA_ROOT, queues="jury", extra_env=WORKER_ENV, concurrency=3
        ) as first:
            run = services.jury_run_create(selection={})
            wait_for(
                lambda: Label.objects.count() >= 30,
                first,
                60,
                "no labels written",
                lambda: f"labels: {Label.objects.count()}",
            )
            kill_worker(first)
        written_before_restart = Label.objects.count()
        assert 30 <= written_before_restart < 180
        # The killed worker's message is never acknowledged; the restarted worker re-queues the unfinished run,
        # waits out the dead drivers' leases and takes their claimed tasks over.
        with worker(
            *broker, settings.MEDIA_ROOT, queues="jury", extra_env=WORKER_ENV, concurrency=3
        ) as second:
            wait_for(
                lambda: JuryRun.objects.get(pk=run.pk).status == "succeeded",
                second,
                120,
                "run not finished",
                lambda: f"labels: {Label.objects.count()}",
            )
    per_pair = Label.objects.values("sample_id", "source_name").annotate(n=Count("id"))
    assert len(per_pair) == 180 and {row["n"] for row in per_pair} == {1}
    assert {j.name for j in jurors} == set(Label.objects.values_list("source_name", flat=True))
    assert not run.tasks.exclude(status="valid").exists()
    run.refresh_from_db()
    assert run.done == run.total == 180  # counted once per task, across the kill
    assert Sample.objects.filter(stratum="incomplete").count() == 0
