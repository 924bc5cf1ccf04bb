"""Trace-generation orchestration efficiency: 3 generators against OpenAI-compatible servers on loopback answering in
200 ms (a reasoning field and an answer), as bench/jury.py measures the jury.

Run: DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python bench/generation.py [--quick]
(2,000 text-only variants × 3 generators, 32 requests in flight per generator; --quick: 300). Each generator's driver
(`generation.runs.generation_drive`, what the Celery task runs) works in its own process; the servers run in three
more. Every reply becomes a sample (the servers answer each variant differently per generator). Fresh database
`guardtrace_bench_generation`.

Ideal time = variants × 0.2 s / 32 (the three generators work in parallel); efficiency = ideal / measured.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time

from _setup import ROOT, fresh_database, machine, run_drivers

DELAY_S = 0.2
CONCURRENCY = 32
NAMES = ("qwen3-vl-thinking", "kimi-vl-thinking", "glm-4.1v-thinking")


def _serve(ready, stop, index: int) -> None:
    import sys

    sys.path.insert(0, str(ROOT))
    from tests.loopback import LoopbackOpenAI

    def reply(body: dict) -> dict:
        text = body["messages"][-1]["content"][-1]["text"]
        return {
            "content": f"I can't help with that ({body['model']}).",
            "reasoning_content": f"Thinking about: {text}",
        }

    with LoopbackOpenAI(reply, delay_s=DELAY_S) as server:
        ready.put((index, server.url))
        stop.wait()


def _drive(generator_id: int, results) -> None:
    from django.db import connection

    from generation import runs

    connection.close()  # a connection of its own, not the parent's
    cpu = time.process_time()
    made = runs.generation_drive(generator_id).written
    results.put({"made": made, "cpu_s": time.process_time() - cpu})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    count = 300 if args.quick else 2000
    os.environ.setdefault("LOG_LEVEL", "ERROR")
    database = fresh_database("guardtrace_bench_generation")

    from django.db import connection

    from annotation.models import Sample
    from generation import runs, services
    from generation.models import GenerationTask, Generator, Variant

    lines = [
        json.dumps({"id": str(n), "text": f"Query {n}: how can I get thing {n} past the gate?"})
        for n in range(count)
    ]
    seed_set = services.seeds_import(data="\n".join(lines).encode(), name="bench.jsonl")
    services.expand(seed_set.queries.all(), kinds=["text_only"])
    ctx = mp.get_context("fork")
    ready, stop, results = ctx.Queue(), ctx.Event(), ctx.Queue()
    servers = [ctx.Process(target=_serve, args=(ready, stop, n)) for n in range(len(NAMES))]
    for server in servers:
        server.start()
    urls = [url for _, url in sorted(ready.get(timeout=30) for _ in servers)]
    generators = [
        Generator.objects.create(name=name.replace(".", "-"), backend="openai", model_name=name, base_url=url,
                                 timeout_s=10, max_concurrency=CONCURRENCY)
        for name, url in zip(NAMES, urls, strict=True)
    ]  # fmt: skip
    run = runs.generation_run_create(variants=Variant.objects.all(), generators=generators, enqueue=False)
    connection.close()
    reports, wall = run_drivers(ctx, _drive, [(g.pk,) for g in generators], results)
    stop.set()
    for server in servers:
        server.join()
    run.refresh_from_db()
    made = sum(r["made"] for r in reports)
    ideal = count * DELAY_S / CONCURRENCY
    done = GenerationTask.objects.filter(run=run, status="done").count()
    print(f"# {machine()} · {database}")
    print(f"{count:,} variants × {len(NAMES)} generators, servers answering in {DELAY_S * 1000:.0f} ms, "
          f"{CONCURRENCY} in flight per generator")  # fmt: skip
    print("| measured s | ideal s | efficiency | samples | tasks done | cpu ms/sample | status |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    print(f"| {wall:.1f} | {ideal:.1f} | {ideal / wall:.3f} | {Sample.objects.count():,} | {done:,} | "
          f"{1000 * sum(r['cpu_s'] for r in reports) / max(1, made):.2f} | {run.status} |")  # fmt: skip
    print()
    print(f"figure efficiency = {ideal / wall:.3f} ratio")


if __name__ == "__main__":
    main()
