"""Served-guard judging efficiency: a guard job over samples, its checkpoint served by an OpenAI-compatible server on
loopback answering in 200 ms, as bench/jury.py measures the jury.

Run: DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python bench/guard_endpoint.py [--quick]
(3,000 samples, 32 requests in flight; --quick: 300). The job runs as the gpu worker runs it
(`guardmodel.services.guard_job_run`) in its own process; the server runs in another. Fresh database
`guardtrace_bench_guard_endpoint`.

Ideal time = samples × 0.2 s / 32; efficiency = ideal / measured.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time

from _setup import ROOT, fresh_database, machine, run_drivers, text_samples

DELAY_S = 0.2
CONCURRENCY = 32


def _serve(ready, stop) -> None:
    import sys

    sys.path.insert(0, str(ROOT))
    from tests.loopback import LoopbackOpenAI, keyword_judge

    with LoopbackOpenAI(keyword_judge, delay_s=DELAY_S) as server:
        ready.put(server.url)
        stop.wait()


def _judge(job_id: int, results) -> None:
    from django.db import connection

    from guardmodel import services

    connection.close()  # a connection of its own, not the parent's
    cpu = time.process_time()
    services.guard_job_run(job_id=job_id)
    results.put({"cpu_s": time.process_time() - cpu})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    count = 300 if args.quick else 3000
    os.environ.setdefault("LOG_LEVEL", "ERROR")
    os.environ["GUARDTRACE_GUARD_ENDPOINT_CONCURRENCY"] = str(CONCURRENCY)
    database = fresh_database("guardtrace_bench_guard_endpoint")

    from django.db import connection

    from annotation.models import Label, Sample
    from guardmodel import services

    text_samples(count)
    ctx = mp.get_context("fork")
    ready, stop, results = ctx.Queue(), ctx.Event(), ctx.Queue()
    server = ctx.Process(target=_serve, args=(ready, stop))
    server.start()
    url = ready.get(timeout=30)
    checkpoint = services.checkpoint_register(name="served-guard", endpoint=url, served_model="guard")
    job = services.guard_job_create(
        checkpoint=checkpoint, sample_ids=Sample.objects.values_list("pk", flat=True), enqueue=False
    )
    connection.close()
    reports, wall = run_drivers(ctx, _judge, [(job.pk,)], results)
    stop.set()
    server.join()
    job.refresh_from_db()
    labels = Label.objects.filter(source_kind="guard")
    ideal = count * DELAY_S / CONCURRENCY
    cpu_ms = 1000 * reports[0]["cpu_s"] / max(1, job.done)
    print(f"# {machine()} · {database}")
    print(
        f"{count:,} samples, one served guard answering in {DELAY_S * 1000:.0f} ms, {CONCURRENCY} in flight"
    )
    print("| measured s | ideal s | efficiency | labels | doubled | failed | cpu ms/label | status |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    print(f"| {wall:.1f} | {ideal:.1f} | {ideal / wall:.3f} | {labels.count():,} | "
          f"{labels.count() - labels.values('sample_id').distinct().count()} | {job.failed} | {cpu_ms:.2f} | "
          f"{job.status} |")  # fmt: skip
    print()
    print(f"figure guard_endpoint_efficiency = {ideal / wall:.3f} ratio")
    print(f"figure guard_endpoint_cpu_ms_per_label = {cpu_ms:.2f} ms")


if __name__ == "__main__":
    main()
