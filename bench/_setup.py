"""Shared set-up for benchmarks: a fresh database of their own (never the app's), migrated."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def fresh_database(name: str) -> str:
    """Point Django at a new, empty database called `name`; PostgreSQL when DATABASE_URL says so."""
    sys.path.insert(0, str(ROOT))
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith(("postgres://", "postgresql://")):
        import psycopg

        base, _, _ = url.rpartition("/")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        os.environ["DATABASE_URL"] = f"{base}/{name}"
    else:
        folder = Path(tempfile.mkdtemp(prefix="guardtrace-bench-"))
        os.environ["DATABASE_URL"] = f"sqlite:///{folder / (name + '.sqlite3')}"
    os.environ["MEDIA_ROOT"] = tempfile.mkdtemp(prefix="guardtrace-bench-media-")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "guardtrace.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from django.db import connection

    return f"{connection.vendor} ({connection.settings_dict['NAME']})"


def text_samples(count: int) -> None:
    """`count` text-only samples, a third of them asking plainly and the rest for steps (the keyword judge's cue)."""
    from annotation.models import Sample

    Sample.objects.bulk_create(
        [Sample(question=f"Question {n}: list the steps for topic {n}" if n % 3 else f"Question {n}: hello",
                thinking="Step one.\n\nStep two.", answer="An answer.", content_hash=f"{n:064x}")
         for n in range(count)],
        batch_size=5000,
    )  # fmt: skip


def synthetic_upload(folder: Path, *, count: int, seed: int) -> tuple[Path, Path]:
    """`count` synthetic samples under `folder` as an import takes them: `samples.jsonl` and its images zipped."""
    import zipfile

    from qta.synthetic import generate

    generate(folder, count=count, seed=seed)
    archive = folder / "images.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for image in (folder / "images").iterdir():
            zf.write(image, f"images/{image.name}")
    return folder / "samples.jsonl", archive


def machine() -> str:
    import platform

    return f"{platform.node()} · {os.cpu_count()} cores · Python {platform.python_version()}"


def run_drivers(ctx, target, arg_tuples, results) -> tuple[list, float]:
    """One process per argument tuple running `target(*args, results)`, each putting one report on `results`
    (a queue of `ctx`); returns the reports and the wall-clock seconds until the last one."""
    import time

    start = time.perf_counter()
    drivers = [ctx.Process(target=target, args=(*args, results)) for args in arg_tuples]
    for driver in drivers:
        driver.start()
    reports = [results.get(timeout=3600) for _ in drivers]
    for driver in drivers:
        driver.join()
    return reports, time.perf_counter() - start
