"""Trace generation through real Celery workers on Redis: the worker driving a run is killed mid-run (SIGKILL) and
the live one beside it takes the run over, with no restart; every variant still ends with exactly one sample, none
lost, none doubled."""

from __future__ import annotations

import json
import re

import pytest

from annotation.models import Sample
from common.models import Lease
from generation import runs, services
from generation.models import GenerationRun, GenerationTask, Generator, Variant
from tests.conftest import REDIS_URL
from tests.loopback import LoopbackOpenAI
from tests.workers import kill_worker, wait_for, worker, worker_output

WORKER_ENV = {"GUARDTRACE_JURY_LEASE_S": "3", "GUARDTRACE_JURY_BACKOFF_S": "0.01"}


def _reply(body: dict) -> dict:
    text = body["messages"][-1]["content"][-1]["text"]
    return {"content": f"No. ({text})", "reasoning_content": f"The user asks: {text}"}


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_run_is_taken_over_by_a_live_one_losing_and_doubling_no_sample(
    settings, tmp_path
):
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()  # no messages left over from other tests
    data = "\n".join(
        json.dumps({"id": str(n), "text": f"Query {n}: how to pass gate {n}?"}) for n in range(40)
    )
    seed_set = services.seeds_import(data=data.encode(), name="seeds.jsonl")
    services.expand(seed_set.queries.all(), kinds=["text_only"])
    broker = (REDIS_URL, {"visibility_timeout": 3600}, settings.MEDIA_ROOT)
    with LoopbackOpenAI(_reply, delay_s=0.2) as server:
        generator = Generator.objects.create(name="thinker", backend="openai", model_name="thinker",
                                             base_url=server.url, timeout_s=5, max_concurrency=4)  # fmt: skip
        logs = {name: tmp_path / f"{name}.log" for name in ("a", "b")}
        with worker(*broker, queues="jury", extra_env=WORKER_ENV, name="gen-a@%h", log=logs["a"]) as a, \
                worker(*broker, queues="jury", extra_env=WORKER_ENV, name="gen-b@%h", log=logs["b"]) as b:  # fmt: skip
            for process in (a, b):
                wait_for(
                    lambda p=process: "ready." in worker_output(p), process, 60, "a worker did not start"
                )
            run = runs.generation_run_create(variants=Variant.objects.all(), generators=[generator])
            wait_for(lambda: Sample.objects.count() >= 10, None, 60, "no samples made")
            # The run's one driver message went to one worker; the other has taken nothing and is idle.
            (driver,) = [
                p for p in (a, b) if re.search(r"generation_drive_task\[\S+\] received", worker_output(p))
            ]
            survivor = b if driver is a else a
            kill_worker(driver)
            made_before_kill = Sample.objects.count()
            assert 10 <= made_before_kill < 40
            # The killed worker's message is never acknowledged (the broker would hand it out again in an hour).
            # The live worker's watch finds the generator's lease run out with work left and queues a driver,
            # which takes over the dead driver's claims.
            wait_for(lambda: GenerationRun.objects.get(pk=run.pk).status == "succeeded", survivor, 60,
                     "the live worker did not take the run over", lambda: worker_output(survivor)[-2000:])  # fmt: skip
            assert "lease ran out with work left" in worker_output(survivor)
    assert Sample.objects.count() == 40
    tasks = GenerationTask.objects.filter(run=run)
    assert tasks.count() == 40 and set(tasks.values_list("status", flat=True)) == {"done"}
    assert len(set(tasks.values_list("sample_id", flat=True))) == 40
    assert GenerationRun.objects.get(pk=run.pk).done == 40  # counted once per task, across the kill
    # Asked again: the calls in flight when the worker died (4) and, on a loaded machine, a few more (CI once saw 45
    # requests; retries after the 5 s timeout are the likely reason, not proven). Never the whole run again (80).
    assert len(server.requests) <= 40 + 2 * 4
    # The survivor's driver gave the lease back.
    assert Lease.objects.get(key=f"generator:{generator.pk}").token == ""
