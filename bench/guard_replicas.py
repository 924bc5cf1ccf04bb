"""Served-guard judging over several replicas of one model: a guard job whose checkpoint names 1, 2 or 4 base URLs,
each a loopback OpenAI-compatible server answering in 200 ms, with the same per-replica concurrency
(`GUARDTRACE_GUARD_ENDPOINT_CONCURRENCY`, applied per replica by `qta.endpoint.ReplicaPool`). A last row runs 4
replicas of which one refuses every connection (taken out, its calls sent at once to the others).

Run: DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python bench/guard_replicas.py [--quick]
(3,200 samples a row, 32 in flight per replica; --quick: 640). Each job runs as the gpu worker runs it
(`guardmodel.services.guard_job_run`) in its own process; each replica runs in a process of its own. Fresh database
`guardtrace_bench_guard_replicas`.

Ideal time = samples × 0.2 s / (32 × replicas answering); efficiency = ideal / measured. On a 2-core machine the
client, the database and the four servers share the cores: the larger rows measure them as much as the spreading.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os

from _setup import ROOT, fresh_database, machine, run_drivers
from guard_endpoint import _judge  # the job as the gpu worker runs it, in a process of its own

DELAY_S = 0.2
CONCURRENCY = 32  # per replica
ROWS = [(1, 0), (2, 0), (4, 0), (4, 1)]  # (replicas, of which refusing connections)


def _serve(ready, stop, answered) -> None:
    import sys

    sys.path.insert(0, str(ROOT))
    from tests.loopback import LoopbackOpenAI, keyword_judge

    def respond(body: dict) -> str:
        with answered.get_lock():
            answered.value += 1
        return keyword_judge(body)

    with LoopbackOpenAI(respond, delay_s=DELAY_S) as server:
        ready.put(server.url)
        stop.wait()


def _row(ctx, servers, answered, *, replicas: int, down: int, ids: list[int], results) -> dict:
    from django.db import connection

    from annotation.models import Label
    from guardmodel import services
    from tests.loopback import closed_port_url

    urls = [closed_port_url() for _ in range(down)] + servers[: replicas - down]
    name = f"served-{replicas}-replicas" + (f"-{down}-down" if down else "")
    checkpoint = services.checkpoint_register(
        name=name, endpoint=urls[0], replicas=urls[1:], served_model="guard"
    )
    job = services.guard_job_create(checkpoint=checkpoint, sample_ids=ids, enqueue=False)
    before = [counter.value for counter in answered]
    connection.close()
    reports, wall = run_drivers(ctx, _judge, [(job.pk,)], results)
    job.refresh_from_db()
    labels = Label.objects.filter(source_kind="guard", source_name=name)
    live = replicas - down
    ideal = len(ids) * DELAY_S / (CONCURRENCY * live)
    shares = [after.value - was for after, was in zip(answered[:live], before, strict=False)]
    return {
        "replicas": replicas,
        "down": down,
        "wall": wall,
        "ideal": ideal,
        "labels": labels.count(),
        "doubled": labels.count() - labels.values("sample_id").distinct().count(),
        "failed": job.failed,
        "status": job.status,
        "shares": shares,
        "cpu_ms": 1000 * reports[0]["cpu_s"] / max(1, job.done),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    count = 640 if args.quick else 3200
    os.environ.setdefault("LOG_LEVEL", "ERROR")
    os.environ["GUARDTRACE_GUARD_ENDPOINT_CONCURRENCY"] = str(CONCURRENCY)
    database = fresh_database("guardtrace_bench_guard_replicas")

    from annotation.models import Sample

    Sample.objects.bulk_create(
        [
            Sample(
                question=f"Question {n}: list the steps for topic {n}" if n % 3 else f"Question {n}: hello",
                thinking="Step one.\n\nStep two.",
                answer="An answer.",
                content_hash=f"{n:064x}",
            )
            for n in range(count)
        ],
        batch_size=5000,
    )
    ids = list(Sample.objects.values_list("pk", flat=True))
    ctx = mp.get_context("fork")
    ready, stop, results = ctx.Queue(), ctx.Event(), ctx.Queue()
    answered = [ctx.Value("i", 0) for _ in range(4)]
    processes = [ctx.Process(target=_serve, args=(ready, stop, counter)) for counter in answered]
    servers = []
    for process in processes:  # one at a time: each URL is matched with its counter
        process.start()
        servers.append(ready.get(timeout=30))
    rows = [_row(ctx, servers, answered, replicas=r, down=d, ids=ids, results=results) for r, d in ROWS]
    stop.set()
    for process in processes:
        process.join()

    print(f"# {machine()} · {database}")
    print(
        f"{count:,} samples a row; each replica answers in {DELAY_S * 1000:.0f} ms, {CONCURRENCY} in flight on each"
    )
    print(
        "| replicas | in flight | measured s | ideal s | samples/s | efficiency | answered per replica | labels | "
        "doubled | failed | cpu ms/label | status |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- |")
    for row in rows:
        live = row["replicas"] - row["down"]
        label = f"{row['replicas']}" + (f" ({row['down']} refusing)" if row["down"] else "")
        print(
            f"| {label} | {CONCURRENCY * live} | {row['wall']:.2f} | {row['ideal']:.2f} | "
            f"{count / row['wall']:.0f} | {row['ideal'] / row['wall']:.3f} | "
            f"{' / '.join(str(s) for s in row['shares'])} | {row['labels']:,} | {row['doubled']} | "
            f"{row['failed']} | {row['cpu_ms']:.2f} | {row['status']} |"
        )
    print()
    one = count / rows[0]["wall"]
    for row in rows:
        if not row["down"]:
            n = row["replicas"]
            print(f"figure guard_replicas_{n}_samples_per_s = {count / row['wall']:.0f} samples/s")
            print(f"figure guard_replicas_{n}_efficiency = {row['ideal'] / row['wall']:.3f} ratio")
    print(f"figure guard_replicas_4_speedup = {count / rows[2]['wall'] / one:.2f} x")
    print(f"figure guard_replicas_4_one_refusing_efficiency = {rows[3]['ideal'] / rows[3]['wall']:.3f} ratio")


if __name__ == "__main__":
    main()
