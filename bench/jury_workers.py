"""Jury throughput over 1, 2 and 3 `jury` worker processes: real `celery worker` processes (one process each, the
`solo` pool) on a Redis of the bench's own and PostgreSQL, six jurors on OpenAI-compatible loopback servers (three
server processes, two jurors each).

Run: DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python bench/jury_workers.py [--quick]
(1,000 samples × 6 jurors a pass; --quick: 150). Needs PostgreSQL (several worker processes write at once) and a
`redis-server` binary (started on BENCH_REDIS_PORT, default 6391). Fresh database `guardtrace_bench_jury_workers`.

A juror's work is driven by one process at a time (its lease holds the juror's concurrency limit across workers),
so N worker processes drive N jurors at once, each keeping its juror's calls in flight. Two regimes:
- *servers slow*: replies after 200 ms, 32 in flight per juror (160 labels/s a juror): the servers bound the jury;
- *servers fast*: replies after 10 ms, 64 in flight per juror: our side's CPU (and the servers' on the same cores)
  bounds it, which is where the machine's core count shows.
Ideal = the servers' time: ceil(6 / N) rounds of jurors, each samples × delay / in flight; efficiency = ideal /
measured (servers slow only: against fast servers the machine is the bound). "Missing": sample × juror pairs with no
label; "doubled": results the run counted beyond its tasks. Speedup = labels/s over one process's;
scaling = speedup / N. "Hand-over" is the mean gap on one worker between a juror's last label and the next
juror's first. "CPU busy" is the whole machine's, from /proc/stat: the workers, the three servers,
PostgreSQL and Redis share its cores.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import time

from _setup import ROOT, fresh_database, machine, text_samples
from _stack import Stack, wait_until
from celery.utils.nodenames import host_format

JURORS = 6
SERVERS = 3
PROCESSES = (1, 2, 3)
REGIMES = (
    ("servers slow", 0.2, 32),
    ("servers fast", 0.01, 64),
)  # (name, reply delay s, in flight per juror)


def _serve(ready, stop, delay_s: float) -> None:
    import sys

    sys.path.insert(0, str(ROOT))
    from tests.loopback import LoopbackOpenAI, keyword_judge

    with LoopbackOpenAI(keyword_judge, delay_s=delay_s) as server:
        ready.put(server.url)
        stop.wait()


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine so far."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _answering(nodes: set[str]) -> bool:
    from guardtrace.celery import app

    return nodes <= {name for reply in app.control.ping(timeout=0.5) for name in reply}


def _pass(
    stack: Stack, env: dict, *, tag: str, processes: int, delay_s: float, in_flight: int, samples: int
) -> dict:
    from django.db import connection
    from django.db.models import Count, Max, Min

    from annotation.models import Label
    from jury import services
    from jury.models import JuryRun, JuryTask

    JuryRun.objects.all().delete()
    Label.objects.all().delete()
    names = [f"jury-{tag}-{processes}-{n}" for n in range(processes)]  # each started once: node soak-<name>-1
    for name in names:
        stack.worker(name, "jury", env)
    nodes = {host_format(f"soak-{name}-1@%h") for name in names}
    wait_until(
        lambda: _answering(nodes), 120, f"{processes} jury worker(s) did not answer a ping", poll_s=0.5
    )
    connection.close()
    busy0, total0 = _cpu_ticks()
    start = time.perf_counter()
    run = services.jury_run_create(selection={})
    wait_until(
        lambda: JuryRun.objects.filter(pk=run.pk, status=JuryRun.Status.SUCCEEDED).exists(), 3600,
        "the run did not finish", poll_s=0.05,
    )  # fmt: skip
    wall = time.perf_counter() - start
    busy1, total1 = _cpu_ticks()
    for name in names:
        stack.stop(name)
    # Between one juror's last label and the next one's first on the same worker: the hand-over (the message, the
    # lease, the first calls of the next juror's round).
    spans: dict[str, list[tuple]] = {}
    for node, _, first, last in (
        JuryTask.objects.filter(run=run).values_list("driven_by", "juror_id")
        .annotate(first=Min("completed_at"), last=Max("completed_at")).order_by()
    ):  # fmt: skip
        spans.setdefault(node, []).append((first, last))
    gaps = [
        (later[0] - earlier[1]).total_seconds()
        for worker_spans in spans.values()
        for earlier, later in zip(sorted(worker_spans), sorted(worker_spans)[1:], strict=False)
    ]
    labels = Label.objects.filter(source_kind="juror")
    pairs = labels.values("sample_id", "source_name").annotate(n=Count("id")).count()
    ideal = math.ceil(JURORS / processes) * samples * delay_s / in_flight
    return {
        "processes": processes,
        "wall": wall,
        "ideal": ideal,
        "labels": labels.count(),
        "missing": samples * JURORS - pairs,
        # The database keeps one label per sample × juror whatever happens; a result written twice would show as the
        # run counting more than its tasks.
        "doubled": JuryRun.objects.get(pk=run.pk).done - run.total,
        "per_second": labels.count() / wall,
        "busy": (busy1 - busy0) / max(1, total1 - total0),
        "shares": sorted(share.labels for share in services.run_workers(run)),
        "handover": sum(gaps) / len(gaps) if gaps else 0.0,
    }


def _servers(ctx, stop, delay_s: float) -> tuple[list, list[str]]:
    """SERVERS server processes answering after `delay_s`; forked before this process has any thread of its own."""
    ready = ctx.Queue()
    servers = [ctx.Process(target=_serve, args=(ready, stop, delay_s)) for _ in range(SERVERS)]
    for server in servers:
        server.start()
    return servers, [ready.get(timeout=30) for _ in servers]


def _regime(stack: Stack, env: dict, *, tag: str, urls: list[str], in_flight: int, delay_s: float,
            samples: int) -> list[dict]:  # fmt: skip
    from jury.models import Juror

    Juror.objects.all().delete()
    for n in range(JURORS):
        Juror.objects.create(name=f"juror-{n}", backend="openai", model_name=f"juror-{n}",
                             base_url=urls[n % SERVERS], timeout_s=5, max_concurrency=in_flight)  # fmt: skip
    return [
        _pass(stack, env, tag=tag, processes=p, delay_s=delay_s, in_flight=in_flight, samples=samples)
        for p in PROCESSES
    ]


def _bench(servers: dict, samples: int) -> dict[str, list[dict]]:
    with Stack("jury-workers") as stack:
        broker = stack.redis_start(int(os.environ.get("BENCH_REDIS_PORT", "6391")))
        os.environ["CELERY_BROKER_URL"] = broker
        os.environ["GUARDTRACE_VAR_DIR"] = str(stack.folder / "var")
        fresh_database("guardtrace_bench_jury_workers")
        from django.conf import settings

        text_samples(samples)
        env = {"DATABASE_URL": os.environ["DATABASE_URL"], "CELERY_BROKER_URL": broker, "LOG_LEVEL": "ERROR",
               "MEDIA_ROOT": settings.MEDIA_ROOT, "GUARDTRACE_VAR_DIR": os.environ["GUARDTRACE_VAR_DIR"]}  # fmt: skip
        return {
            name: _regime(stack, env, tag=name.split()[-1], urls=servers[name][1], in_flight=in_flight,
                          delay_s=delay, samples=samples)
            for name, delay, in_flight in REGIMES
        }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    samples = 150 if args.quick else 1000
    if not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
        raise SystemExit("bench/jury_workers.py needs PostgreSQL: set DATABASE_URL=postgres://…")
    ctx = mp.get_context("fork")
    stop = ctx.Event()
    servers = {name: _servers(ctx, stop, delay) for name, delay, _ in REGIMES}
    try:
        results = _bench(servers, samples)
    finally:
        stop.set()
        for processes, _ in servers.values():
            for process in processes:
                process.join(timeout=30)
    print(f"machine: {machine()} · PostgreSQL · Redis")
    print(
        f"{samples} samples × {JURORS} jurors a pass; one `celery worker` process (solo pool) per jury worker"
    )
    header = ("regime", "processes", "in flight", "measured s", "ideal s", "labels/s", "efficiency", "speedup",
              "labels per worker", "hand-over s", "missing", "doubled", "CPU busy")  # fmt: skip
    print(" | ".join(header))
    for (name, _, in_flight), rows in zip(REGIMES, results.values(), strict=True):
        one = rows[0]["per_second"]
        for r in rows:
            # Against servers this fast the servers' time is no bound: the row measures the machine, not an ideal.
            bound = r["ideal"] >= 0.5 * r["wall"]
            ideal, efficiency = (
                (f"{r['ideal']:.1f}", f"{r['ideal'] / r['wall']:.3f}") if bound else ("—", "—")
            )
            print(f"{name} | {r['processes']} | {in_flight} | {r['wall']:.1f} | {ideal} | "
                  f"{r['per_second']:.0f} | {efficiency} | {r['per_second'] / one:.2f} | "
                  f"{' / '.join(map(str, r['shares']))} | {r['handover']:.2f} | {r['missing']} | {r['doubled']} | "
                  f"{100 * r['busy']:.0f}%")  # fmt: skip
    for (name, _, _), rows in zip(REGIMES, results.values(), strict=True):
        key = name.replace(" ", "_")
        one = rows[0]["per_second"]
        for r in rows:
            print(f"figure jury_{key}_{r['processes']}proc_labels_per_s = {r['per_second']:.0f} labels/s")
        for r in rows[1:]:
            scaling = r["per_second"] / (r["processes"] * one)
            print(f"figure jury_{key}_{r['processes']}proc_scaling = {scaling:.3f} ratio")
    lost = sum(r["missing"] + r["doubled"] for rows in results.values() for r in rows)
    print(f"figure jury_workers_labels_missing_or_doubled = {lost} labels")


if __name__ == "__main__":
    main()
