"""Jury orchestration efficiency: 3 jurors against OpenAI-compatible servers on loopback answering in 200 ms.

Run: DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python bench/jury.py [--quick]
(3,000 samples × 3 jurors, 32 requests in flight per juror, then 128; --quick: 300 samples). Each juror's driver
(`jury.services.juror_drive`, what the Celery task runs) works in its own process, as on a prefork worker; the
three servers run in three more processes, reached over HTTP on the event loop of `qta.endpoint`. Three passes:
clean, with 10% of responses failing (half 500s, half timeouts past the juror's 1 s timeout), and clean with 128 in
flight (about 1,900 calls/s: past what two cores can serve and send). Fresh database `guardtrace_bench_jury`.

Ideal time = samples × 0.2 s / in flight (the three jurors work in parallel); efficiency = ideal / measured. From
the clean pass it projects the paper's 30,000 samples × 3 jurors against servers answering in 1 s with 64 in flight
(the ideal plus the overhead per round of calls measured here), and the call rate at which our side's CPU would
fill one core.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import time

from _setup import ROOT, fresh_database, machine, run_drivers, text_samples

DELAY_S = 0.2
CONCURRENCY = 32
NAMES = ("gemma", "mistral", "qwen")


def _serve(ready, stop, fault_rate: float, seed: int) -> None:
    """One juror's model server, in a process of its own (as three real servers would be)."""
    import sys

    sys.path.insert(0, str(ROOT))
    from tests.loopback import LoopbackOpenAI, keyword_judge

    rng = random.Random(seed)

    def fault(body: dict):
        if rng.random() >= fault_rate:
            return None
        return 500 if rng.random() < 0.5 else "timeout"

    with LoopbackOpenAI(keyword_judge, delay_s=DELAY_S, fault_for=fault, hang_s=1.5) as server:
        ready.put((seed, server.url))
        cpu = time.process_time()
        stop.wait()
        ready.put(
            (seed, time.process_time() - cpu)
        )  # its own CPU time: it shares the machine with the drivers


def _drive(juror_id: int, results) -> None:
    from django.db import connection

    from jury import services

    connection.close()  # a connection of its own, not the parent's
    counts = {"statements": 0, "writes": 0}

    def count(execute, sql, params, many, context):
        counts["statements"] += 1
        if sql.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
            counts["writes"] += 1
        return execute(sql, params, many, context)

    cpu = time.process_time()
    with connection.execute_wrapper(count):
        labels = services.juror_drive(juror_id).written
    results.put({"labels": labels, "cpu_s": time.process_time() - cpu, **counts})


def _pass(samples: int, fault_rate: float, concurrency: int = CONCURRENCY) -> dict:
    from django.db import connection
    from django.db.models import Count

    from annotation.models import Label
    from jury import services
    from jury.models import Juror

    ctx = mp.get_context("fork")
    ready, stop, results = ctx.Queue(), ctx.Event(), ctx.Queue()
    servers = [ctx.Process(target=_serve, args=(ready, stop, fault_rate, n)) for n in range(len(NAMES))]
    for server in servers:
        server.start()
    urls = [url for _, url in sorted(ready.get(timeout=30) for _ in servers)]
    Label.objects.all().delete()
    Juror.objects.all().delete()
    jurors = [
        Juror.objects.create(
            name=name,
            backend="openai",
            model_name=name,
            base_url=url,
            timeout_s=1,
            max_concurrency=concurrency,
        )  # fmt: skip
        for name, url in zip(NAMES, urls, strict=True)
    ]
    run = services.jury_run_create(selection={}, enqueue=False)
    connection.close()
    reports, wall = run_drivers(ctx, _drive, [(j.pk,) for j in jurors], results)
    stop.set()
    server_cpu_s = sum(cpu for _, cpu in (ready.get(timeout=30) for _ in servers))
    for server in servers:
        server.join()
    run.refresh_from_db()
    labels = Label.objects.filter(source_kind="juror")
    pairs = labels.values("sample_id", "source_name").annotate(n=Count("id"))
    written = sum(r["labels"] for r in reports)
    return {
        "wall_s": wall,
        "ideal_s": samples * DELAY_S / concurrency,
        "concurrency": concurrency,
        "calls_per_s": written / wall,
        "labels": labels.count(),
        "missing": samples * len(NAMES) - pairs.count(),
        "duplicated": labels.count() - pairs.count(),
        "failed": labels.filter(status="failed").count(),
        "cpu_ms_per_label": 1000 * sum(r["cpu_s"] for r in reports) / max(1, written),
        "writes_per_label": sum(r["writes"] for r in reports) / max(1, written),
        "statements_per_label": sum(r["statements"] for r in reports) / max(1, written),
        "status": run.status,
        "cpu_busy": (sum(r["cpu_s"] for r in reports) + server_cpu_s) / (wall * (os.cpu_count() or 1)),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    samples = 300 if args.quick else 3000
    os.environ.setdefault("GUARDTRACE_JURY_BACKOFF_S", "0.2")
    os.environ.setdefault("LOG_LEVEL", "ERROR")  # retried calls log a warning each
    database = fresh_database("guardtrace_bench_jury")

    text_samples(samples)
    clean = _pass(samples, 0.0)
    faulty = _pass(samples, 0.10)
    wide = _pass(samples, 0.0, concurrency=128)
    print(f"machine: {machine()} · database: {database}")
    print(f"{samples} samples × {len(NAMES)} jurors, servers answering in {DELAY_S * 1000:.0f} ms, "
          f"{CONCURRENCY} in flight per juror")  # fmt: skip
    header = ("pass", "in flight", "measured s", "ideal s", "efficiency", "calls/s", "labels", "missing", "doubled",
              "failed", "cpu ms/label", "writes/label", "statements/label", "machine CPU busy")  # fmt: skip
    print(" | ".join(header))
    for name, r in (("clean", clean), ("10% faults", faulty), ("clean, wide", wide)):
        print(f"{name} | {r['concurrency']} | {r['wall_s']:.1f} | {r['ideal_s']:.1f} | {r['ideal_s'] / r['wall_s']:.3f} | "
              f"{r['calls_per_s']:.0f} | {r['labels']} | {r['missing']} | {r['duplicated']} | {r['failed']} | "
              f"{r['cpu_ms_per_label']:.2f} | {r['writes_per_label']:.3f} | {r['statements_per_label']:.3f} | "
              f"{100 * r['cpu_busy']:.0f}%")  # fmt: skip
    # The paper's jury: 30,000 samples × 3 jurors, servers answering in 1 s, 64 in flight per juror. Each juror's
    # driver pays the overhead per round of calls measured in the clean pass on top of the servers' time.
    rounds = samples / CONCURRENCY
    overhead_s = max(0.0, clean["wall_s"] - clean["ideal_s"]) / rounds
    paper_rounds = 30_000 / 64
    projected = paper_rounds * (1.0 + overhead_s)
    saturates = 1000 / clean["cpu_ms_per_label"]
    print(
        f"paper's jury (30,000 × 3 calls, 1 s each, 64 in flight): ideal {paper_rounds:.0f} s, projected "
        f"{projected:.0f} s ({overhead_s * 1000:.1f} ms of overhead per round of calls)"
    )
    print(
        f"our CPU fills one core at {saturates:,.0f} calls/s ({clean['cpu_ms_per_label']:.2f} ms a call); the wide "
        f"pass reached {wide['calls_per_s']:,.0f} calls/s with the servers on the same two cores"
    )
    print(f"figure efficiency = {clean['ideal_s'] / clean['wall_s']:.3f} ratio")
    print(f"figure efficiency_under_faults = {faulty['ideal_s'] / faulty['wall_s']:.3f} ratio")
    print(f"figure labels_missing_under_faults = {faulty['missing']} labels")
    print(f"figure labels_duplicated_under_faults = {faulty['duplicated']} labels")
    print(f"figure cpu_ms_per_label = {clean['cpu_ms_per_label']:.2f} ms")
    print(f"figure efficiency_128_in_flight = {wide['ideal_s'] / wide['wall_s']:.3f} ratio")
    print(f"figure calls_per_s_128_in_flight = {wide['calls_per_s']:.0f} calls/s")
    print(f"figure calls_per_s_one_core = {saturates:.0f} calls/s")
    print(f"figure paper_jury_projected_s = {projected:.0f} s")
    print(f"figure db_writes_per_label = {clean['writes_per_label']:.3f} statements")


if __name__ == "__main__":
    main()
