"""Trace generation against a real OpenAI-compatible server on loopback: a separate reasoning field, <think> tags,
no separable reasoning (kept, flagged), retries and failures; every reply becomes a Sample whose provenance
survives export and import; re-running asks only what is missing."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from annotation.models import Sample
from annotation.services import samples_export, samples_import
from generation import runs, services
from generation.models import GenerationTask, Generator, Variant
from qta.generators import split_reasoning
from qta.images import DirectoryImageSource
from tests.loopback import LoopbackOpenAI

pytestmark = pytest.mark.django_db(transaction=True)


def _reply(body: dict):
    text = " ".join(p.get("text", "") for m in body["messages"] for p in m["content"] if p["type"] == "text")
    if body["model"] == "qwen3-vl-thinking":
        return {
            "content": f"I can't help with: {text[:30]}",
            "reasoning_content": "The user asks for harm.\n\nRefuse.",
        }
    if body["model"] == "glm-thinking":
        return "<think>Let me list the steps.\n\nStep 1: obtain it.</think>\n\nI won't provide that."
    return "Here is an answer with no reasoning shown."


@pytest.fixture
def variants(settings):
    settings.GUARDTRACE_JURY_BACKOFF_S = 0.01
    data = "\n".join(json.dumps(r) for r in [
        {"id": "q1", "text": "How do I get past the gate?", "category": "crime", "source": "S-Eval"},
        {"id": "q2", "text": "Which dose of Q-3 is harmful?", "category": "health", "source": "S-Eval"},
    ]).encode()  # fmt: skip
    seed_set = services.seeds_import(data=data, name="seeds.jsonl")
    services.expand(seed_set.queries.all(), kinds=["text_only", "typographic"])
    return Variant.objects.all()


def _generator(name: str, url: str, **fields) -> Generator:
    return Generator.objects.create(name=name, backend="openai", model_name=name, base_url=url, timeout_s=5,
                                    max_tokens=256, **fields)  # fmt: skip


def test_generators_make_samples_with_their_reasoning_and_provenance(variants, tmp_path):
    with LoopbackOpenAI(_reply) as server:
        qwen = _generator("qwen3-vl-thinking", server.url, samples_per_variant=2, temperature=0.9)
        glm = _generator("glm-thinking", server.url)
        plain = _generator("plain-model", server.url)
        run = runs.generation_run_create(variants=variants, generators=[qwen, glm, plain], subset="gen-demo",
                                         enqueue=False)  # fmt: skip
        assert run.total == 4 * 2 + 4 + 4
        for generator in (qwen, glm, plain):
            runs.generation_drive(generator.pk)
    run.refresh_from_db()
    assert run.status == "succeeded" and runs.run_progress(run)["pending"] == 0
    # Typographic variants carry their image to the server; text-only ones do not.
    assert len(server.images) == 2 * 2 + 2 + 2 and all(size == (760, 760) for size in server.images)

    field = Sample.objects.filter(generator_model="qwen3-vl-thinking")
    # Two replies per variant; this server answers both alike, so they are one sample (same content), not two.
    assert field.count() == 4 and GenerationTask.objects.filter(generator=qwen, status="done").count() == 8
    sample = field.get(input_variant="text_only", provenance__seed__external_id="q1")
    assert sample.thinking == "The user asks for harm.\n\nRefuse." and sample.answer.startswith(
        "I can't help with"
    )
    assert (
        sample.question == "How do I get past the gate?"
        and sample.category == "crime"
        and sample.subset == "gen-demo"
    )
    provenance = sample.provenance
    assert (
        provenance["seed"]["text"] == "How do I get past the gate?"
        and provenance["variant"]["kind"] == "text_only"
    )
    assert provenance["generator"] == {"name": "qwen3-vl-thinking", "backend": "openai", "model": "qwen3-vl-thinking",
                                       "max_tokens": 256, "temperature": 0.9, "samples": 2}  # fmt: skip
    assert provenance["reasoning"] == "field" and provenance["usage"]["prompt_tokens"] == 100

    tagged = Sample.objects.filter(generator_model="glm-thinking", input_variant="typographic").first()
    assert (
        tagged.thinking == "Let me list the steps.\n\nStep 1: obtain it."
        and tagged.answer == "I won't provide that."
    )
    assert (
        tagged.image is not None
        and tagged.provenance["variant"]["derivation"]["typography"]["font_size"] == 40
    )
    flagged = GenerationTask.objects.filter(generator=plain)
    assert {t.status for t in flagged} == {"flagged"} and all(t.sample_id for t in flagged)
    assert Sample.objects.filter(generator_model="plain-model", thinking="").count() == 4

    # The same run again asks nothing: every reply was made with these parameters.
    again = runs.generation_run_create(variants=variants, generators=[qwen, glm, plain], enqueue=False)
    assert again.total == 0 and again.status == "succeeded"

    # Provenance survives export and import.
    before = {s.content_hash: s.provenance for s in Sample.objects.all()}
    samples_export(samples=Sample.objects.all(), out_dir=tmp_path / "out")
    Sample.objects.all().delete()
    samples_import(data=(tmp_path / "out" / "samples.jsonl").read_bytes(), name="samples.jsonl", fmt="jsonl",
                   images=DirectoryImageSource(tmp_path / "out"))  # fmt: skip
    assert {s.content_hash: s.provenance for s in Sample.objects.all()} == before


def test_calls_are_retried_and_failures_are_asked_again_in_the_next_run(variants):
    text_only = variants.filter(kind="text_only")
    with LoopbackOpenAI(_reply, faults=[503, 503]) as server:
        flaky = _generator("glm-thinking", server.url)
        run = runs.generation_run_create(variants=text_only, generators=[flaky], enqueue=False)
        runs.generation_drive(flaky.pk)
    attempts = list(GenerationTask.objects.filter(run=run).values_list("attempts", flat=True))
    assert sum(attempts) == 2 + 2 and runs.run_progress(run)["done"] == 2  # two 503s, each retried

    broken = _generator("qwen3-vl-thinking", "http://127.0.0.1:9/v1")  # nothing listens: every attempt fails
    failed_run = runs.generation_run_create(variants=text_only, generators=[broken], enqueue=False)
    runs.generation_drive(broken.pk)
    failed_run.refresh_from_db()
    tasks = GenerationTask.objects.filter(run=failed_run)
    assert failed_run.status == "succeeded" and {t.status for t in tasks} == {"failed"}
    assert all("Unreachable" in t.error and t.attempts == 4 for t in tasks) and not any(
        t.sample_id for t in tasks
    )
    retry = runs.generation_run_create(variants=text_only, generators=[broken], enqueue=False)
    assert retry.total == 2  # failed replies are asked again


def test_reasoning_is_split_from_fields_or_tags():
    assert split_reasoning({"content": "Answer", "reasoning": "Because"}) == ("Because", "Answer", "field")
    assert split_reasoning({"content": "Plan it.</think>Done."}) == ("Plan it.", "Done.", "think_tags")
    assert split_reasoning({"content": "<think></think>Only an answer"}) == (
        "",
        "<think></think>Only an answer",
        "none",
    )
    assert split_reasoning({"content": None, "reasoning_content": "All reasoning"}) == (
        "All reasoning",
        "",
        "field",
    )


def test_a_local_transformers_generator_answers_variants_with_and_without_images(
    variants, lively_dir, settings
):
    settings.GUARDTRACE_GUARD_DEVICE = "cpu"
    local = Generator.objects.create(name="tiny-local", backend="transformers", model_name=str(lively_dir),
                                     max_tokens=12, temperature=0.0)  # fmt: skip
    run = runs.generation_run_create(variants=variants, generators=[local], enqueue=False)
    made = runs.generation_drive(local.pk).written
    assert made == 4, list(GenerationTask.objects.filter(run=run).values_list("status", "error"))
    tasks = GenerationTask.objects.filter(run=run)
    # An untrained tiny model writes no <think> block: its replies are kept, flagged, with their token counts.
    assert {t.status for t in tasks} == {"flagged"} and all(t.usage["completion_tokens"] > 0 for t in tasks)
    samples = Sample.objects.filter(generator_model="tiny-local")
    assert samples.filter(input_variant="typographic", image__isnull=False).count() == 2
    assert all(s.provenance["generator"]["backend"] == "transformers" for s in samples)


def _answers(body: dict) -> dict:
    text = body["messages"][-1]["content"][-1]["text"]
    return {"content": f"No. ({text})", "reasoning_content": f"The user asks: {text}"}


def test_a_driver_whose_lease_ran_out_has_its_claims_taken_over_and_each_task_yields_one_sample(variants):
    from common.models import Lease, lease_acquire
    from qta.generators import Trace

    with LoopbackOpenAI(_answers) as server:
        generator = _generator("thinker", server.url, max_concurrency=2)
        run = runs.generation_run_create(variants=variants, generators=[generator], enqueue=False)
        # A driver took the lease and claimed two tasks, then its worker was killed (no renewal, no release).
        key = f"generator:{generator.pk}"
        assert lease_acquire(key, "dead", 60) is None
        dead = runs._claim(generator, "dead", 2)
        assert len(dead) == 2
        # While its lease lasts, no one else drives the generator or touches its claims.
        outcome = runs.generation_drive(generator.pk)
        assert outcome.written == 0 and 0 < outcome.busy_for <= 60 and not server.requests
        assert GenerationTask.objects.filter(claim_token="dead", status="claimed").count() == 2
        Lease.objects.filter(key=key).update(until=timezone.now() - timedelta(seconds=1))
        outcome = runs.generation_drive(generator.pk)
    assert outcome.busy_for is None and outcome.written == 4
    run.refresh_from_db()
    tasks = GenerationTask.objects.filter(run=run)
    assert (
        run.status == "succeeded"
        and run.done == run.total == 4
        and set(tasks.values_list("status", flat=True)) == {"done"}
    )
    # Each task was asked once (the dead driver's calls never came back) and made one sample of its own.
    assert len(server.requests) == 4 and Sample.objects.count() == 4
    assert len(set(tasks.values_list("sample_id", flat=True))) == 4
    assert Lease.objects.get(key=key).token == ""  # given back on the way out
    # A late reply from the dead driver finds its claim gone: nothing written, no sample added.
    late = Trace(status="ok", thinking="Late.", answer="Too late.")
    assert runs._record(generator, dead[0], late, "dead") is None
    assert (
        Sample.objects.count() == 4 and GenerationTask.objects.get(pk=dead[0].pk).sample.answer != "Too late."
    )


def test_one_driver_works_a_generators_runs_within_its_concurrency_limit(variants):
    in_flight, most = [0], [0]
    lock = threading.Lock()

    def reply(body: dict) -> dict:
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        time.sleep(0.1)
        with lock:
            in_flight[0] -= 1
        return _answers(body)

    with LoopbackOpenAI(reply) as server:
        generator = _generator("thinker", server.url, max_concurrency=2)
        text_only, typographic = variants.filter(kind="text_only"), variants.filter(kind="typographic")
        first = runs.generation_run_create(variants=text_only, generators=[generator], enqueue=False)
        second = runs.generation_run_create(variants=typographic, generators=[generator], enqueue=False)
        outcome = runs.generation_drive(generator.pk)
    assert outcome.written == 4 and most[0] == 2
    for run in (first, second):
        run.refresh_from_db()
        assert run.status == "succeeded" and runs.run_progress(run)["done"] == 2


def test_a_cancelled_run_is_not_asked_and_resumes_without_doubling_a_reply(variants, monkeypatch):
    queued: list = []
    monkeypatch.setattr(runs, "_enqueue", queued.append)  # the drivers it would queue, driven below
    with LoopbackOpenAI(_answers) as server:
        generator = _generator("thinker", server.url)
        run = runs.generation_run_create(variants=variants, generators=[generator], enqueue=False)
        assert runs.generation_run_cancel(run=run) and not runs.generation_run_cancel(run=run)
        assert runs.generation_drive(generator.pk).written == 0 and not server.requests
        # Meanwhile a new run asks the text-only variants again: the resumed run leaves those to it.
        text_only = variants.filter(kind="text_only")
        again = runs.generation_run_create(variants=text_only, generators=[generator], enqueue=False)
        assert again.total == 2
        assert runs.generation_run_resume(run=run)
        assert queued == [[generator]]
        run.refresh_from_db()
        assert run.status == "running" and run.total == 2 and run.tasks.count() == 2
        assert runs.generation_drive(generator.pk).written == 4
    run.refresh_from_db()
    assert run.status == "succeeded" and not runs.generation_run_resume(run=run)
    assert len(server.requests) == 4 and Sample.objects.count() == 4
    asked = GenerationTask.objects.filter(generator=generator).values_list("variant_id", "sample_index")
    assert sorted(asked) == sorted(
        (v.pk, 0) for v in variants
    )  # each reply asked once, in one run or the other


def test_a_dead_drivers_generator_is_queued_once_by_live_workers_and_all_on_a_workers_start(
    variants, monkeypatch
):
    from common.models import Lease, lease_acquire

    queued: list = []
    monkeypatch.setattr(runs, "_enqueue", queued.append)  # the drivers it would queue, driven below
    with LoopbackOpenAI(_answers) as server:
        dead, live, idle, off = (_generator(name, server.url) for name in ("dead", "live", "idle", "off"))
        runs.generation_run_create(variants=variants, generators=[dead, live, off], enqueue=False)
        Generator.objects.filter(pk=off.pk).update(enabled=False)
        for generator, token in ((dead, "dead"), (live, "live"), (idle, "gone"), (off, "off")):
            assert lease_acquire(f"generator:{generator.pk}", token, 30) is None
        Lease.objects.exclude(token="live").update(until=timezone.now() - timedelta(seconds=1))
        # A worker starting up queues every generator with open work in a running run.
        assert runs.resume_unfinished() == 3
        queued.clear()
        # The dead driver's generator has work left: its lease is given back and a driver queued, once however
        # many workers look. A live lease, a generator with no work and a disabled one are left as they are.
        assert runs.requeue_orphaned() == [dead.pk] and runs.requeue_orphaned() == []
        assert [[g.pk for g in generators] for generators in queued] == [[dead.pk]]
        tokens = dict(Lease.objects.values_list("key", "token"))
        assert [tokens[f"generator:{g.pk}"] for g in (dead, live, idle, off)] == ["", "live", "gone", "off"]
        assert runs.generation_drive(dead.pk).written == 4  # the queued driver takes the generator at once


def test_claims_made_under_a_lost_lease_are_taken_over_by_the_holder_and_never_written_twice(variants):
    from common.models import lease_acquire
    from qta.generators import Trace

    with LoopbackOpenAI(_answers) as server:
        generator = _generator("thinker", server.url)
        runs.generation_run_create(variants=variants, generators=[generator], enqueue=False)
        assert lease_acquire(f"generator:{generator.pk}", "holder", 60) is None
        driver = runs._GenerationDriver(generator, runs.backend_for(generator), "holder")
        # A driver that lost the lease (and has not noticed yet) claims after the holder took over.
        late = runs._claim(generator, "lost", 3)
        assert driver.more() and not GenerationTask.objects.filter(status="claimed").exists()
        assert driver.run() == 4
    assert len(server.requests) == 4 and Sample.objects.count() == 4
    assert not GenerationTask.objects.filter(claim_token="lost").exists()
    reply = Trace(status="ok", thinking="Late.", answer="Too late.")
    assert [runs._record(generator, task, reply, "lost") for task in late] == [None] * len(late)
    assert Sample.objects.count() == 4


def test_a_variant_whose_image_is_missing_fails_its_task_alone_and_the_run_finishes(variants):
    broken = variants.filter(kind="typographic").first()
    lost_file = broken.image.file.name
    broken.image.file.storage.delete(lost_file)
    with LoopbackOpenAI(_answers) as server:
        generator = _generator("thinker", server.url, max_concurrency=2)
        run = runs.generation_run_create(variants=variants, generators=[generator], enqueue=False)
        outcome = runs.generation_drive(generator.pk)
    assert outcome.written == 3 and len(server.requests) == 3  # the broken variant was never sent
    run.refresh_from_db()
    assert run.status == "succeeded" and run.done == run.total == 4
    failed = GenerationTask.objects.get(run=run, variant=broken)
    assert failed.status == "failed" and failed.sample_id is None
    assert f"variant {broken.pk}" in failed.error and lost_file in failed.error
    assert "FileNotFoundError" in failed.error
    others = GenerationTask.objects.filter(run=run).exclude(pk=failed.pk)
    assert set(others.values_list("status", flat=True)) == {"done"} and all(t.sample_id for t in others)
    assert Sample.objects.filter(generator_model="thinker").count() == 3
