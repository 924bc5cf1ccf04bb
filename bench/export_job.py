"""An export job over many synthetic samples with images: time, samples/s, archive size and the memory it took.

Run: DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python bench/export_job.py [--quick] [--count N]
(30,000 samples; --quick: 2,000). Uses a fresh database `guardtrace_bench_export`, never the app's, and a throwaway
var/ folder: the message the export's creation queues lands there and no worker reads it. The job then runs in this
process through the task function a worker calls (annotation.tasks.export_job_run_task), beating its progress.

Memory: the job runs in a fresh process of its own, as on a worker, so that the set-up's memory does not count: its
peak resident set, and — in a second run of the same job under tracemalloc, not timed — the peak of Python's own
allocations while the job ran (the samples, images and archive stay on disk and in the database, not in memory).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
import zipfile
from pathlib import Path

from _setup import ROOT, fresh_database, machine


def _peak_rss() -> int:
    """This process's resident-set high-water mark (VmHWM: its own, where getrusage's maximum would also count the
    parent it was forked from)."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def run_job(job_id: int, trace: bool) -> None:
    """In the child: run the export job through the task function and print what it took, as JSON."""
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from annotation.models import ExportJob
    from annotation.tasks import export_job_run_task

    rss_before = _peak_rss()
    if trace:
        tracemalloc.start()
    start = time.perf_counter()
    export_job_run_task(job_id)
    seconds = time.perf_counter() - start
    traced = tracemalloc.get_traced_memory()[1] if trace else 0
    peak = _peak_rss()
    job = ExportJob.objects.get(pk=job_id)
    figures = {"seconds": seconds, "rss_before": rss_before, "rss_peak": peak, "traced_peak": traced}
    print(json.dumps({**figures, "status": job.status, "error": job.error}))


def _child(job_id: int, *, trace: bool) -> dict:
    command = [sys.executable, __file__, "--job", str(job_id), *(["--trace"] if trace else [])]
    done = subprocess.run(command, capture_output=True, text=True, check=True, env=os.environ)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--count", type=int)
    parser.add_argument("--job", type=int, help=argparse.SUPPRESS)  # the child's mode: run this export job
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job is not None:
        return run_job(args.job, args.trace)
    count = args.count or (2_000 if args.quick else 30_000)
    var = Path(tempfile.mkdtemp(prefix="guardtrace-bench-var-"))
    os.environ["GUARDTRACE_VAR_DIR"] = str(var)
    os.environ["CELERY_BROKER_URL"] = "filesystem://"
    database = fresh_database("guardtrace_bench_export")

    from annotation import exports, services
    from annotation.models import ExportJob, ImageAsset, Label
    from qta.images import DirectoryImageSource
    from qta.synthetic import generate

    work = Path(tempfile.mkdtemp(prefix="guardtrace-bench-export-"))
    try:
        start = time.perf_counter()
        generate(work / "in", count=count, seed=0)
        data = (work / "in" / "samples.jsonl").read_bytes()
        images_in = DirectoryImageSource(work / "in")
        report = services.samples_import(data=data, name="bench.jsonl", fmt="jsonl", images=images_in)
        setup_s = time.perf_counter() - start
        assert report.created == count, report
        images, labels = ImageAsset.objects.count(), Label.objects.count()

        job = exports.export_job_create(filters={}, user=None)
        timed = _child(job.pk, trace=False)
        export_s = timed["seconds"]
        job.refresh_from_db()
        assert job.status == ExportJob.Status.SUCCEEDED and job.sample_count == count, timed
        assert (job.done, job.total) == (count, count)
        with zipfile.ZipFile(job.archive.path) as archive:
            members = len(archive.namelist())
            with archive.open("samples.jsonl") as lines:
                assert sum(1 for _ in lines) == count
        traced = _child(exports.export_job_create(filters={}, user=None).pk, trace=True)
        assert traced["status"] == ExportJob.Status.SUCCEEDED, traced
        size = job.size_bytes
    finally:
        from django.conf import settings

        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(var, ignore_errors=True)
        shutil.rmtree(settings.MEDIA_ROOT, ignore_errors=True)
    print(f"machine: {machine()}\ndatabase: {database}\n")
    print(f"{'step':<38}{'samples':>10}{'images':>10}{'labels':>10}{'seconds':>10}{'samples/s':>12}")
    for step, seconds in (("set-up (generate + import)", setup_s), ("export job (task function)", export_s)):
        print(f"{step:<38}{count:>10}{images:>10}{labels:>10}{seconds:>10.2f}{count / seconds:>12.0f}")
    print()
    print(f"archive: {size / 1e6:,.1f} MB, {members:,} files (samples.jsonl and {members - 1:,} images)")
    rss_mb, base_mb = timed["rss_peak"] / 1e6, timed["rss_before"] / 1e6
    traced_mb = traced["traced_peak"] / 1e6
    print(
        f"memory: the job's process peaked at {rss_mb:,.0f} MB resident ({base_mb:,.0f} MB once Django was up)"
    )
    print(
        f"        Python's allocations peaked at {traced_mb:,.1f} MB during the job (tracemalloc, second run)"
    )
    print()
    print(f"figure export_job_seconds = {export_s:.2f} s")
    print(f"figure export_job_rate = {count / export_s:.0f} samples/s")
    print(f"figure export_job_archive_mb = {size / 1e6:.1f} MB")
    print(f"figure export_job_peak_rss_mb = {rss_mb:.0f} MB")
    print(f"figure export_job_peak_traced_mb = {traced_mb:.1f} MB")


if __name__ == "__main__":
    main()
