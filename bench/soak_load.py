"""Load soak: 50 experts labelling and 5 reviewers browsing (locust, headless) while a jury run and an import are
in progress, against gunicorn + PostgreSQL + Redis + real Celery workers on loopback; then the database is checked.

Run: .venv/bin/python bench/soak_load.py [--quick]      (10 minutes; --quick: 1 minute. `make soak` runs it.)

Needs PostgreSQL (SOAK_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/postgres: the script drops and
creates the database `soak_load` there), `redis-server` on the PATH (its own, on SOAK_REDIS_PORT, default 6390: broker
and shared cache) and locust (`pip install -e '.[dev]'`). gunicorn runs as in production (4 workers × 4 threads);
one worker takes the `jury` queue (3 processes), one `default` (imports). Jurors are loopback servers answering in
200 ms. Users and their API tokens and sessions are made in the database, so neither the login lockout nor a login
page is in the measurement.

Reports p50 / p95 / p99 per endpoint and the error rate from locust's CSV, then checks every submission locust got a
201 for is stored exactly once, and no label, slot or item is doubled.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _setup import ROOT, fresh_database, machine, synthetic_upload  # noqa: E402
from _stack import Stack, wait_until  # noqa: E402

from tests.processes import free_port  # noqa: E402

EXPERTS, REVIEWERS = 50, 5


def _fill(samples: int, queued: int, unjudged: int) -> list[int]:
    """`samples` judged by the jury (the first `queued` split 1:1:1, waiting for three experts each), plus
    `unjudged` samples for the jury run during the load. Returns some sample ids for the reviewers."""
    from django.utils import timezone

    from annotation.models import Label, Sample, Stratum
    from annotation.strata import stratify
    from qta.protocol import PROMPT_VERSION

    rows = [
        Sample(question=f"Question {n}: how would someone approach topic {n % 97}? list the steps" if n % 2
               else f"Question {n}: hello", thinking="Step one.\n\nStep two.\n\nStep three.",
               answer="An answer.", subset="soak", content_hash=f"{n:064x}",
               stratum=Stratum.D1_1_1 if n < queued else Stratum.D3_0 if n < samples else Stratum.UNLABELLED)
        for n in range(samples + unjudged)
    ]  # fmt: skip
    Sample.objects.bulk_create(rows, batch_size=5000)
    ids = list(Sample.objects.order_by("id").values_list("id", flat=True)[:samples])
    now = timezone.now()
    votes = {n: (0.0, 0.5, 1.0) if n < queued else (0.0, 0.0, 0.0) for n in range(samples)}
    Label.objects.bulk_create(
        [Label(sample_id=pk, source_kind="juror", source_name=name, prompt_version=PROMPT_VERSION, judgment=value,
               analysis=f"{name} reads it as {value}", created_at=now)
         for n, pk in enumerate(ids) for name, value in zip(("gemma", "mistral", "qwen"), votes[n], strict=True)],
        batch_size=5000,
    )  # fmt: skip
    stratify(sample_ids=ids[:queued], prompt_version=PROMPT_VERSION)
    return random.Random(0).sample(ids, 200)


def _people(folder: Path, samples: list[int]) -> Path:
    """Experts with API tokens and reviewers with sessions, made directly (as `login` would leave them)."""
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.auth.models import Group, User
    from django.contrib.sessions.backends.db import SessionStore
    from rest_framework.authtoken.models import Token

    expert, reviewer = Group.objects.get(name="expert"), Group.objects.get(name="reviewer")
    tokens, sessions = [], []
    for n in range(EXPERTS):
        user = User.objects.create_user(username=f"soak-expert{n:02d}", password=None)
        user.groups.add(expert)
        tokens.append(Token.objects.create(user=user).key)
    for n in range(REVIEWERS):
        user = User.objects.create_user(username=f"soak-reviewer{n}", password=None)
        user.groups.add(reviewer)
        session = SessionStore()
        # The backend a password login records (the lockout's backend only refuses; it loads no user).
        session[SESSION_KEY], session[BACKEND_SESSION_KEY] = (
            str(user.pk),
            settings.AUTHENTICATION_BACKENDS[-1],
        )
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
        sessions.append(session.session_key)
    path = folder / "users.json"
    path.write_text(json.dumps({"tokens": tokens, "sessions": sessions, "samples": samples}))
    return path


def _import_files(folder: Path, count: int, files: int) -> list[tuple[Path, Path]]:
    """`files` synthetic sets of `count` lines with their images zipped, each different (so none is a duplicate)."""
    return [synthetic_upload(folder / f"import-{n}", count=count, seed=100 + n) for n in range(files)]


class Imports(threading.Thread):
    """Keeps one import in progress: the next file is uploaded as the last one ends, until told to stop."""

    def __init__(self, files: list[tuple[Path, Path]]) -> None:
        super().__init__(daemon=True)
        self.files, self.stop, self.jobs = files, threading.Event(), []

    def run(self) -> None:
        from django.core.files import File
        from django.db import connection

        from annotation import services
        from annotation.models import ImportJob

        try:
            for data, archive in self.files:
                if self.stop.is_set():
                    return
                with data.open("rb") as d, archive.open("rb") as a:
                    job = services.import_job_create(data_file=File(d, name="samples.jsonl"),
                                                     images_archive=File(a, name="images.zip"), fmt="jsonl",
                                                     skip_invalid=False, user=None)  # fmt: skip
                self.jobs.append(job.pk)
                while ImportJob.objects.get(pk=job.pk).status in ("pending", "running"):
                    if self.stop.wait(0.5):
                        return
        finally:
            connection.close()

    def summary(self) -> str:
        from annotation.models import ImportJob

        jobs = list(ImportJob.objects.filter(pk__in=self.jobs).order_by("pk"))
        took = [
            (j.finished_at - j.started_at).total_seconds() for j in jobs if j.finished_at and j.started_at
        ]
        states = ", ".join(sorted({j.status for j in jobs}))
        return (f"{len(jobs)} imports one after another ({states}; {sum(j.created for j in jobs):,} samples stored, "
                f"{min(took, default=0):.0f}–{max(took, default=0):.0f} s each)")  # fmt: skip


def _stats(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def _consistency(acknowledged: list[dict]) -> dict:
    from django.db.models import Count

    from annotation.models import Label
    from experts.models import ExpertSlot

    acked = [row["label"] for row in acknowledged]
    stored = set(Label.objects.filter(source_kind="expert").values_list("pk", flat=True))
    slots = dict(
        ExpertSlot.objects.filter(label_id__in=acked)
        .values_list("label_id")
        .annotate(n=Count("id"))
        .order_by()
    )
    twice_per_item = (
        Label.objects.filter(source_kind="expert")
        .values("sample_id", "source_name")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .count()
    )
    return {
        "acknowledged": len(acked),
        "acknowledged_distinct": len(set(acked)),
        "stored": len(stored),
        "missing": len(set(acked) - stored),
        "not_acknowledged": len(stored - set(acked)),
        "slot_mismatch": sum(1 for label in acked if slots.get(label) != 1),
        "expert_twice_on_a_sample": twice_per_item,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    minutes = 1 if args.quick else 10
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ["DATABASE_URL"] = os.environ.get(
        "SOAK_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"
    )
    sys.path.insert(0, str(ROOT))
    from tests.loopback import LoopbackOpenAI, keyword_judge

    with Stack("soak-load") as stack:
        broker = stack.redis_start(int(os.environ.get("SOAK_REDIS_PORT", "6390")))
        os.environ["CELERY_BROKER_URL"] = broker
        os.environ["GUARDTRACE_CACHE_URL"] = broker.rpartition("/")[0] + "/1"
        os.environ["GUARDTRACE_VAR_DIR"] = str(stack.folder / "var")
        database = fresh_database("soak_load")
        from django.conf import settings
        from django.utils import timezone

        from jury import services as jury
        from jury.models import Juror, JuryRun

        queued = 2000 if args.quick else 12000
        unjudged = 600 if args.quick else 6000
        reviewer_samples = _fill(queued + 3000, queued, unjudged)
        users = _people(stack.folder, reviewer_samples)
        uploads = _import_files(stack.folder, 2000 if args.quick else 10000, files=2 if args.quick else 6)
        env = {
            "DATABASE_URL": os.environ["DATABASE_URL"], "CELERY_BROKER_URL": broker,
            "GUARDTRACE_CACHE_URL": os.environ["GUARDTRACE_CACHE_URL"], "MEDIA_ROOT": settings.MEDIA_ROOT,
            "GUARDTRACE_VAR_DIR": os.environ["GUARDTRACE_VAR_DIR"], "GUARDTRACE_EXPERT_DAILY_CAP": "100000",
            "LOG_LEVEL": "WARNING",
        }  # fmt: skip
        port = free_port()
        stack.gunicorn(port, env)
        stack.worker("jury", "jury", env, concurrency=3)
        stack.worker("imports", "default", env)
        with LoopbackOpenAI(keyword_judge, delay_s=0.2) as server:
            for name in ("gemma", "mistral", "qwen"):
                Juror.objects.create(name=name, backend="openai", model_name=name, base_url=server.url,
                                     timeout_s=5, max_concurrency=4)  # fmt: skip
            run = jury.jury_run_create(selection={"unlabelled": True})
            importer = Imports(uploads)
            importer.start()
            out = stack.folder / "acknowledged.json"
            started = time.monotonic()
            locust = stack.start(
                "locust",
                [str(ROOT / ".venv/bin/locust"), "-f", str(ROOT / "bench/locustfile.py"), "--headless",
                 "-u", str(EXPERTS + REVIEWERS), "-r", "10", "-t", f"{minutes}m", "--host", f"http://127.0.0.1:{port}",
                 "--csv", str(stack.folder / "load"), "--only-summary", "--stop-timeout", "10"],
                {"SOAK_LOAD_USERS": str(users), "SOAK_LOAD_OUT": str(out)},
            )  # fmt: skip
            wait_until(lambda: locust.poll() is not None, minutes * 60 + 120, "locust to finish", poll_s=1)
            wall = time.monotonic() - started
            importer.stop.set()
            importer.join()
            run.refresh_from_db()
            took = (run.finished_at or timezone.now()) - run.created_at
            run_state = (
                f"jury run {run.status}, {run.done:,} of {run.total:,} labels in {took.total_seconds():.0f} s"
            )
            import_state = importer.summary()
            JuryRun.cancel(run.pk)
        acknowledged = json.loads(out.read_text()) if out.exists() else []
        stats = _stats(stack.folder / "load_stats.csv")
        failures = _stats(stack.folder / "load_failures.csv")
        if not stats:
            print(stack.log_tail("locust", 60))
        check = _consistency(acknowledged)
    _report(stats, failures, check, minutes, wall, database, run_state, import_state)
    # The run's image files go; its database stays for a look until the next run.
    shutil.rmtree(os.environ["MEDIA_ROOT"], ignore_errors=True)


def _report(stats, failed, check, minutes, wall, database, run_state, import_state) -> None:
    print(f"machine: {machine()} · database: {database} · gunicorn 4×4 · Redis broker + cache · real workers")
    print(f"{EXPERTS} experts + {REVIEWERS} reviewers for {minutes} min ({wall:.0f} s); during it: {run_state}; "
          f"{import_state}")  # fmt: skip
    print("| endpoint | requests | failures | p50 ms | p95 ms | p99 ms | max ms | req/s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    total = failures = 0
    for row in stats:
        print(f"| {row['Name']} | {int(row['Request Count']):,} | {int(row['Failure Count'])} | {row['50%']} | "
              f"{row['95%']} | {row['99%']} | {float(row['Max Response Time']):.0f} | "
              f"{float(row['Requests/s']):.1f} |")  # fmt: skip
        if row["Name"] == "Aggregated":
            total, failures = int(row["Request Count"]), int(row["Failure Count"])
    for row in failed:
        print(f"failure: {row['Method']} {row['Name']}: {row['Error']} × {row['Occurrences']}")
    print("consistency: " + ", ".join(f"{k} {v:,}" for k, v in check.items()))
    by_name = {row["Name"]: row for row in stats}
    for name, key in (("POST expert claim", "claim"), ("POST expert submit", "submit")):
        if name in by_name:
            print(f"figure load_{key}_p95_ms = {by_name[name]['95%']} ms")
            print(f"figure load_{key}_p99_ms = {by_name[name]['99%']} ms")
    pages = [row for name, row in by_name.items() if name.startswith("GET")]
    if pages:
        print(f"figure load_page_p95_ms = {max(int(row['95%']) for row in pages)} ms")
    print(f"figure load_requests = {total} requests")
    print(f"figure load_error_rate = {100 * failures / max(1, total):.3f} %")
    print(f"figure load_submissions_acknowledged = {check['acknowledged']} labels")
    print(f"figure load_submissions_missing = {check['missing']} labels")
    print(f"figure load_submissions_doubled = {check['acknowledged'] - check['acknowledged_distinct'] + check['expert_twice_on_a_sample']} labels")  # fmt: skip


if __name__ == "__main__":
    main()
