"""Import and export speed of synthetic QTA samples with images.

Run: DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python bench/import_export.py [--quick]
(30,000 samples; --quick: 2,000). Uses a fresh database `guardtrace_bench_io`, never the app's.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from _setup import fresh_database, machine


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--count", type=int)
    args = parser.parse_args()
    count = args.count or (2_000 if args.quick else 30_000)
    database = fresh_database("guardtrace_bench_io")

    from annotation import services
    from annotation.images import DirectoryImageSource
    from annotation.models import ImageAsset, Sample
    from annotation.synthetic import generate

    work = Path(tempfile.mkdtemp(prefix="guardtrace-bench-io-"))
    try:
        start = time.perf_counter()
        generate(work / "in", count=count, seed=0)
        generate_s = time.perf_counter() - start
        data = (work / "in" / "samples.jsonl").read_bytes()

        start = time.perf_counter()
        report = services.samples_import(data=data, name="bench.jsonl", fmt="jsonl",
                                         images=DirectoryImageSource(work / "in"))  # fmt: skip
        import_s = time.perf_counter() - start
        assert report.created == count, report

        start = time.perf_counter()
        exported = services.samples_export(samples=Sample.objects.all(), out_dir=work / "out")
        export_s = time.perf_counter() - start
        assert exported == count
    finally:
        shutil.rmtree(work, ignore_errors=True)

    images = ImageAsset.objects.count()
    print(f"machine: {machine()}\ndatabase: {database}\n")
    print(f"{'step':<28}{'samples':>10}{'images':>10}{'seconds':>10}{'samples/s':>12}")
    for step, seconds in (("generate (Pillow)", generate_s), ("import (validate + store)", import_s),
                          ("export (jsonl + images)", export_s)):  # fmt: skip
        print(f"{step:<28}{count:>10}{images:>10}{seconds:>10.2f}{count / seconds:>12.0f}")
    print()
    print(f"figure import_seconds = {import_s:.2f} s")
    print(f"figure import_rate = {count / import_s:.0f} samples/s")
    print(f"figure export_seconds = {export_s:.2f} s")


if __name__ == "__main__":
    main()
