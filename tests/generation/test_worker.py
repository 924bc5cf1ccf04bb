"""Trace generation through real Celery workers on Redis: a worker killed mid-run (SIGKILL) and a new one started,
and every variant still ends with exactly one sample, none lost, none doubled."""

from __future__ import annotations

import json

import pytest

from annotation.models import Sample
from common.models import Lease
from generation import runs, services
from generation.models import GenerationRun, GenerationTask, Generator, Variant
from tests.conftest import REDIS_URL
from tests.loopback import LoopbackOpenAI
from tests.workers import kill_worker, wait_for, worker

WORKER_ENV = {"GUARDTRACE_JURY_LEASE_S": "3", "GUARDTRACE_JURY_BACKOFF_S": "0.01"}


def _reply(body: dict) -> dict:
    text = body["messages"][-1]["content"][-1]["text"]
    return {"content": f"No. ({text})", "reasoning_content": f"The user asks: {text}"}


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_run_loses_and_doubles_no_sample(settings):
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()  # no messages left over from other tests
    data = "\n".join(
        json.dumps({"id": str(n), "text": f"Query {n}: how to pass gate {n}?"}) for n in range(40)
    )
    seed_set = services.seeds_import(data=data.encode(), name="seeds.jsonl")
    services.expand(seed_set.queries.all(), kinds=["text_only"])
    broker = (REDIS_URL, {"visibility_timeout": 3600})
    with LoopbackOpenAI(_reply, delay_s=0.2) as server:
        generator = Generator.objects.create(name="thinker", backend="openai", model_name="thinker",
                                             base_url=server.url, timeout_s=5, max_concurrency=4)  # fmt: skip
        with worker(*broker, settings.MEDIA_ROOT, queues="jury", extra_env=WORKER_ENV) as first:
            run = runs.generation_run_create(variants=Variant.objects.all(), generators=[generator])
            wait_for(lambda: Sample.objects.count() >= 10, first, 60, "no samples made")
            kill_worker(first)
        made_before_restart = Sample.objects.count()
        assert 10 <= made_before_restart < 40
        # The killed worker's message is never acknowledged; the new worker re-queues the generator's driver, which
        # waits out the dead driver's lease (it holds the generator's) and then takes over its claims.
        with worker(*broker, settings.MEDIA_ROOT, queues="jury", extra_env=WORKER_ENV) as second:
            wait_for(
                lambda: GenerationRun.objects.get(pk=run.pk).status == "succeeded",
                second,
                90,
                "run not finished",
            )
    assert Sample.objects.count() == 40
    tasks = GenerationTask.objects.filter(run=run)
    assert tasks.count() == 40 and set(tasks.values_list("status", flat=True)) == {"done"}
    assert len(set(tasks.values_list("sample_id", flat=True))) == 40
    assert GenerationRun.objects.get(pk=run.pk).done == 40  # counted once per task, across the kill
    # Asked again: the calls in flight when the worker died (4) and, on a loaded machine, a few more (CI once saw 45
    # requests; retries after the 5 s timeout are the likely reason, not proven). Never the whole run again (80).
    assert len(server.requests) <= 40 + 2 * 4
    assert Lease.objects.get(key=f"generator:{generator.pk}").token == ""  # the second driver gave it back
