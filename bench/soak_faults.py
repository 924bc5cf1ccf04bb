"""Fault injection on the production-like stack: PostgreSQL, a Redis of its own, real `celery worker` processes.

Run: .venv/bin/python bench/soak_faults.py [--quick]      (or `make soak`, which runs it with the load soak)

Needs PostgreSQL (SOAK_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/postgres: the script drops and
creates the database `soak` there) and `redis-server` on the PATH: it starts its own on SOAK_REDIS_PORT (default
6390; refused if anything listens there) and restarts that one, never a shared Redis. Jurors and the served guard
are OpenAI-compatible servers on loopback (`tests/loopback.py`) answering in 200 ms.

Faults, each on samples of its own (2,000 per jury fault; --quick: 200):
  a. jurors failing 20% of calls (half HTTP 500, half hanging past the juror's 1 s timeout), the jury worker
     SIGKILLed at a third and at two thirds of the run, restarted each time;
  b. the same faulty jurors, Redis stopped and started again (every queued message lost) at 40% of the run;
  c. the database connections dropped (`pg_terminate_backend`) during an import of 3,000 lines with images (--quick:
     1,000), once while it checks the file and once while it stores it; the import must end failed (or be
     interrupted) with nothing stored, and be resumed to completion;
  d. a guard job's worker SIGKILLed at 40% of the job, restarted.
After each: every sample has exactly its expected labels (one per juror, or one guard label), no duplicated label or
sample, no image file without its ImageAsset row (orphan), and the run ended as it should.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _setup import fresh_database, machine, synthetic_upload  # noqa: E402
from _stack import Stack, wait_until  # noqa: E402

DELAY_S = 0.2
FAULT_RATE = 0.2
NAMES = ("gemma", "mistral", "qwen")
WORKER_ENV = {
    # A dead driver's work is taken over after 3 s (not the default 30) so the soak spends its time working.
    "GUARDTRACE_JURY_LEASE_S": "3",
    "GUARDTRACE_JURY_BACKOFF_S": "0.05",
    "LOG_LEVEL": "WARNING",
}


@dataclass
class Row:
    fault: str
    samples: int
    expected: int
    present: int
    duplicated: int
    orphans: int
    outcome: str
    seconds: float = 0.0


def _faulty(seed: int):
    rng = random.Random(seed)

    def fault(body: dict):
        if rng.random() >= FAULT_RATE:
            return None
        return 500 if rng.random() < 0.5 else "timeout"

    return fault


def _samples(subset: str, count: int) -> list[int]:
    from annotation.models import Sample

    Sample.objects.bulk_create(
        [Sample(question=f"{subset} question {n}: list the steps for topic {n}" if n % 3 else f"{subset} {n}: hi",
                thinking="Step one.\n\nStep two.", answer="An answer.", subset=subset,
                content_hash=f"{subset}-{n}".encode().hex().ljust(64, "0")[:64])
         for n in range(count)],
        batch_size=5000,
    )  # fmt: skip
    return list(Sample.objects.filter(subset=subset).values_list("pk", flat=True))


def orphans() -> int:
    """Image files under media with no ImageAsset row."""
    from django.conf import settings

    from annotation.models import ImageAsset

    folder = Path(settings.MEDIA_ROOT) / "images"
    on_disk = {p.relative_to(settings.MEDIA_ROOT).as_posix() for p in folder.rglob("*") if p.is_file()}
    return len(on_disk - set(ImageAsset.objects.values_list("file", flat=True)))


def _labels_check(subset: str, kind: str, per_sample: int) -> tuple[int, int, int, int, int]:
    """(samples, expected, present, duplicated, failed) for the subset's labels of `kind`."""
    from django.db.models import Count

    from annotation.models import Label, Sample

    samples = Sample.objects.filter(subset=subset).count()
    labels = Label.objects.filter(sample__subset=subset, source_kind=kind)
    pairs = list(
        labels.values("sample_id", "source_name").annotate(n=Count("id")).values_list("n", flat=True)
    )
    failed = labels.exclude(status="valid").count()
    return samples, samples * per_sample, len(pairs), sum(n - 1 for n in pairs), failed


def _juror_labels(subset: str) -> int:
    from annotation.models import Label

    return Label.objects.filter(sample__subset=subset, source_kind="juror").count()


class Soak:
    def __init__(self, stack: Stack, env: dict, quick: bool) -> None:
        self.stack, self.env, self.quick = stack, env, quick
        self.samples = 200 if quick else 2000
        # In flight per juror: sized so a run lasts long enough to be hit twice (about 40 s clean, --quick 20 s).
        self.in_flight = 2 if quick else 8
        self.rows: list[Row] = []

    def jury_worker(self):
        return self.stack.worker("jury", "jury", self.env, concurrency=3)

    def jurors(self, urls: list[str]):
        from jury.models import Juror

        Juror.objects.all().delete()
        return [
            Juror.objects.create(name=name, backend="openai", model_name=name, base_url=url, timeout_s=1,
                                 max_concurrency=self.in_flight)
            for name, url in zip(NAMES, urls, strict=True)
        ]  # fmt: skip

    def _await_run(self, run_id: int, timeout: float) -> str:
        from jury.models import JuryRun

        def over() -> bool:
            process = self.stack.processes.get("jury")
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"the jury worker exited:\n{self.stack.log_tail('jury')}")
            return JuryRun.objects.get(pk=run_id).status != "running"

        try:
            wait_until(over, timeout, f"jury run {run_id} to finish")
        except TimeoutError:
            return "running (stalled)"
        return JuryRun.objects.get(pk=run_id).status

    def fault_kills(self) -> None:
        """(a) Faulty jurors, the jury worker SIGKILLed twice mid-run and restarted."""
        from jury import services
        from jury.models import JuryRun

        subset = "soak-kill"
        _samples(subset, self.samples)
        started = time.monotonic()
        self.jury_worker()
        run = services.jury_run_create(selection={"subset": subset})
        total = run.total
        seen = []
        for third in (1, 2):
            wait_until(lambda t=third: _juror_labels(subset) >= total * t // 3, 600, "labels to be written")
            self.stack.stop("jury", signal.SIGKILL)
            seen.append(JuryRun.objects.get(pk=run.pk).status)
            self.jury_worker()
        status = self._await_run(run.pk, 600)
        self._record(f"a. jurors fail {FAULT_RATE:.0%}, jury worker SIGKILLed ×2", subset, "juror", len(NAMES),
                     f"after each kill: {'/'.join(seen)} (no driver); after restart: {status}", started)  # fmt: skip

    def fault_redis(self) -> None:
        """(b) Faulty jurors, Redis stopped and started again mid-run (its queued messages lost)."""
        from jury import services

        subset = "soak-redis"
        _samples(subset, self.samples)
        started = time.monotonic()
        if "jury" not in self.stack.processes:
            self.jury_worker()
        run = services.jury_run_create(selection={"subset": subset})
        wait_until(lambda: _juror_labels(subset) >= run.total * 2 // 5, 600, "labels to be written")
        self.stack.redis_restart()
        status = self._await_run(run.pk, 300)
        outcome = f"Redis restarted at 40%: run {status}"
        if status != "succeeded":
            # The messages were lost with Redis: a worker that starts re-queues the run's drivers.
            self.stack.stop("jury")
            self.jury_worker()
            status = self._await_run(run.pk, 600)
            outcome += f"; after a worker restart: {status}"
        self._record("b. jurors fail 20%, Redis restarted", subset, "juror", len(NAMES), outcome, started)

    def _drop_connections(self) -> int:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            return cursor.fetchone()[0]

    def fault_import(self, phase: str) -> None:
        """(c) The database connections dropped while an import checks (`phase` "checking") or stores its file."""
        from django.conf import settings
        from django.core.files import File

        from annotation import services
        from annotation.models import ImportJob, Sample

        count = 1000 if self.quick else 3000
        folder = self.stack.folder / f"import-{phase}"
        data, archive = synthetic_upload(folder, count=count, seed=len(self.rows))  # new samples each time
        lines = sum(1 for _ in data.open())
        before = Sample.objects.count()
        started = time.monotonic()
        self.stack.worker("imports", "default", self.env)
        images = Path(settings.MEDIA_ROOT) / "images"
        known = set(images.rglob("*.png")) if images.is_dir() else set()
        with data.open("rb") as d, archive.open("rb") as a:
            job = services.import_job_create(data_file=File(d, name="samples.jsonl"),
                                             images_archive=File(a, name="images.zip"), fmt="jsonl",
                                             skip_invalid=False, user=None)  # fmt: skip

        def reached() -> bool:
            row = ImportJob.objects.get(pk=job.pk)
            if phase == "checking":  # the file is parsed (its total known) and its images are being checked
                return row.status == "running" and row.total > 0
            return images.is_dir() and any(p not in known for p in images.rglob("*.png"))

        wait_until(reached, 300, f"the import to reach {phase}", poll_s=0.02)
        dropped = self._drop_connections()
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: ImportJob.objects.get(pk=job.pk).status != "running", 60, "the import to end")
        job.refresh_from_db()
        after_fault = job.status
        half = Sample.objects.count() - before
        stray = orphans()
        outcome = (
            f"{dropped} connections dropped; import {after_fault}, {half} samples stored, {stray} orphans"
        )
        if after_fault == "running":
            # Stuck: the worker lives, so only a worker restart finds the import abandoned.
            self.stack.stop("imports")
            self.stack.worker("imports", "default", self.env)
            outcome += "; worker restarted"
        else:
            resumed = services.import_job_resume(job)
            outcome += f"; resumed: {resumed}"
        wait_until(lambda: ImportJob.objects.get(pk=job.pk).status in ("succeeded", "failed"), 600,
                   "the resumed import to end")  # fmt: skip
        self.stack.stop("imports")
        job.refresh_from_db()
        stored = Sample.objects.count() - before
        outcome += f" → {job.status}, {stored} of {lines} lines stored"
        self._add(Row(f"c. DB connections dropped while the import {phase}", lines, lines, stored,
                             _duplicate_samples(), orphans(), outcome, time.monotonic() - started))  # fmt: skip

    def fault_guard(self, url: str) -> None:
        """(d) A guard job's worker SIGKILLed mid-job, restarted: the job resumes and judges each sample once."""
        from guardmodel import services
        from guardmodel.models import GuardJob

        subset = "soak-guard"
        ids = _samples(subset, self.samples)
        checkpoint = services.checkpoint_register(name="soak-guard", endpoint=url, served_model="guard")
        env = {**self.env, "GUARDTRACE_GUARD_ENDPOINT_CONCURRENCY": str(self.in_flight)}
        started = time.monotonic()
        self.stack.worker("gpu", "gpu", env)
        job = services.guard_job_create(checkpoint=checkpoint, sample_ids=ids)
        wait_until(lambda: GuardJob.objects.get(pk=job.pk).done >= len(ids) * 2 // 5, 600, "guard labels")
        self.stack.stop("gpu", signal.SIGKILL)
        seen = GuardJob.objects.get(pk=job.pk).status
        self.stack.worker("gpu", "gpu", env)
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: GuardJob.objects.get(pk=job.pk).finished, 600, "the guard job to end")
        self.stack.stop("gpu")
        job.refresh_from_db()
        self._record("d. guard job's worker SIGKILLed", subset, "guard", 1,
                     f"after the kill: {seen} (no worker); after restart: {job.status}", started)  # fmt: skip

    def _add(self, row: Row) -> None:
        self.rows.append(row)
        print(f"done: {row.fault}: {row.outcome} ({row.seconds:.0f} s)", flush=True)

    def _record(
        self, fault: str, subset: str, kind: str, per_sample: int, outcome: str, started: float
    ) -> None:
        samples, expected, present, duplicated, failed = _labels_check(subset, kind, per_sample)
        if failed:
            outcome += (
                f"; {failed} labels failed after every attempt (stored as failed, asked again next run)"
            )
        self._add(Row(fault, samples, expected, present, duplicated + _duplicate_samples(), orphans(),
                             outcome, time.monotonic() - started))  # fmt: skip


def _duplicate_samples() -> int:
    from django.db.models import Count

    from annotation.models import Sample

    counts = Sample.objects.values("content_hash").annotate(n=Count("id")).filter(n__gt=1)
    return sum(row["n"] - 1 for row in counts)


def _servers(count: int, fault_rate: bool):
    from tests.loopback import LoopbackOpenAI, keyword_judge

    return [
        LoopbackOpenAI(
            keyword_judge, delay_s=DELAY_S, fault_for=_faulty(n) if fault_rate else None, hang_s=1.5
        )
        for n in range(count)
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="abcd", help="which faults to inject, e.g. 'ac'")
    args = parser.parse_args()
    os.environ.setdefault("LOG_LEVEL", "ERROR")
    os.environ["DATABASE_URL"] = os.environ.get(
        "SOAK_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"
    )
    with Stack("soak-faults") as stack:
        broker = stack.redis_start(int(os.environ.get("SOAK_REDIS_PORT", "6390")))
        os.environ["CELERY_BROKER_URL"] = broker
        os.environ["GUARDTRACE_VAR_DIR"] = str(stack.folder / "var")
        database = fresh_database("soak")
        from django.conf import settings

        env = {**WORKER_ENV, "DATABASE_URL": os.environ["DATABASE_URL"], "CELERY_BROKER_URL": broker,
               "MEDIA_ROOT": settings.MEDIA_ROOT, "GUARDTRACE_VAR_DIR": os.environ["GUARDTRACE_VAR_DIR"]}  # fmt: skip
        soak = Soak(stack, env, args.quick)
        servers = _servers(3, True) + _servers(1, False)
        for server in servers:
            server.__enter__()
        try:
            urls = [server.url for server in servers[:3]]
            if "a" in args.only or "b" in args.only:
                soak.jurors(urls)
            if "a" in args.only:
                soak.fault_kills()
            if "b" in args.only:
                soak.fault_redis()
            stack.stop("jury")
            if "c" in args.only:
                soak.fault_import("checking")
                soak.fault_import("storing")
            if "d" in args.only:
                soak.fault_guard(servers[3].url)
        finally:
            for server in servers:
                server.__exit__(None, None, None)
    _report(soak, database)
    # The run's image files go; its database stays for a look until the next run.
    shutil.rmtree(os.environ["MEDIA_ROOT"], ignore_errors=True)


def _report(soak: Soak, database: str) -> None:
    print(f"machine: {machine()} · database: {database} · Redis of its own · real celery workers")
    print(f"jury faults: {soak.samples} samples × {len(NAMES)} jurors, {soak.in_flight} in flight each, "
          f"replies after {DELAY_S * 1000:.0f} ms")  # fmt: skip
    print("| fault | samples | labels expected | present | duplicated | orphans | seconds | outcome |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in soak.rows:
        print(f"| {r.fault} | {r.samples:,} | {r.expected:,} | {r.present:,} | {r.duplicated} | {r.orphans} | "
              f"{r.seconds:.0f} | {r.outcome} |")  # fmt: skip
    missing = sum(r.expected - r.present for r in soak.rows)
    print(f"figure soak_faults = {len(soak.rows)} faults")
    print(f"figure soak_labels_missing = {missing} labels")
    print(f"figure soak_labels_duplicated = {sum(r.duplicated for r in soak.rows)} labels")
    print(f"figure soak_orphan_images = {max((r.orphans for r in soak.rows), default=0)} files")


if __name__ == "__main__":
    main()
