"""The expert queue under load: 20 experts claiming and submitting at once over HTTP, and the agreement page.

Run: DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python bench/expert_queue.py [--quick]
(100,000 samples of which 10,000 wait in the expert queue with K = 3 slots each; 20 experts each label 40 items
twice: "paced", reading each item 0.5–1.5 s before submitting, and "saturated", back to back; --quick: 20,000 /
2,000 samples and 8 items each). The app runs under gunicorn as in
production (`--workers 4 --threads 4`) on loopback; each expert is a client thread with its own API token going
through `/api/v1/expert/claim` and `/api/v1/expert/slots/<id>/submit`. Fresh database `guardtrace_bench_expert`.

Then every queue item is given three expert labels in bulk, and the agreement report is computed over all of
them (the statistics the agreement page shows), in-process and through the page.

Checks: no slot handed to two experts (`double_assigned`), no acknowledged submission missing from the database
(`lost_submissions`), and no expert holding two slots of one item.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict

from _setup import ROOT, fresh_database, machine

EXPERTS = 20


def _fill(samples: int, queued: int) -> None:
    """Samples; the first `queued` split 1:1:1 by three jurors, queued for experts by the real service (stratify)."""
    from django.utils import timezone

    from annotation.models import Label, RiskCategory, Sample, Stratum
    from annotation.strata import stratify

    rng = random.Random(0)
    batch = []
    for n in range(samples):
        batch.append(Sample(
            question=f"Question {n}: how would someone approach topic {n % 97}?",
            thinking="Step one of the reasoning.\n\nStep two of the reasoning.\n\nStep three.",
            answer="A refusal with a pointer to help.",
            subset=rng.choice(["S-Eval-VL", "HADES-Eval", "MM-Eval", "MMJ-Eval"]),
            category=rng.choice(RiskCategory.values),
            stratum=Stratum.D1_1_1 if n < queued else Stratum.D3_0,
            content_hash=f"{n:064x}",
        ))  # fmt: skip
        if len(batch) == 5000:
            Sample.objects.bulk_create(batch)
            batch = []
    Sample.objects.bulk_create(batch)
    ids = list(Sample.objects.order_by("id").values_list("id", flat=True)[:queued])
    now = timezone.now()
    Label.objects.bulk_create(
        [Label(sample_id=i, source_kind="juror", source_name=name, prompt_version="qta-v1", judgment=value,
               analysis=f"{name} reads it as {value}", created_at=now)
         for i in ids for name, value in (("gemma", 0.0), ("mistral", 0.5), ("qwen", 1.0))],
        batch_size=5000,
    )  # fmt: skip
    stratify(sample_ids=ids, prompt_version="qta-v1")


def _experts() -> list[str]:
    from django.contrib.auth.models import Group, User
    from rest_framework.authtoken.models import Token

    group = Group.objects.get_or_create(name="expert")[0]
    tokens = []
    for n in range(EXPERTS):
        user = User.objects.create_user(username=f"expert{n:02d}", password="x")
        user.groups.add(group)
        tokens.append(Token.objects.create(user=user).key)
    return tokens


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(port: int) -> subprocess.Popen:
    env = {**os.environ, "GUARDTRACE_EXPERT_DAILY_CAP": "100000", "LOG_LEVEL": "WARNING"}
    process = subprocess.Popen(
        [str(ROOT / ".venv/bin/gunicorn"), "guardtrace.wsgi:application", "--bind", f"127.0.0.1:{port}",
         "--workers", "4", "--threads", "4", "--worker-class", "gthread", "--log-level", "warning"],
        cwd=ROOT, env=env,
    )  # fmt: skip
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("gunicorn did not start")


class Expert(threading.Thread):
    def __init__(
        self, port: int, token: str, items: int, start: threading.Barrier, seed: int, think_s: float
    ) -> None:
        super().__init__()
        self.host, self.port, self.token, self.items = "127.0.0.1", port, token, items
        self.start_together, self.think_s = start, think_s
        self.rng = random.Random(seed)
        self.claims: list[float] = []
        self.submits: list[float] = []
        self.acknowledged: list[tuple[int, int]] = []  # (slot, label id) answered 201
        self.received: list[int] = []  # slots handed to this expert
        self.errors: list[str] = []

    def _post(self, conn, path: str, body: dict | None = None) -> tuple[int, dict]:
        payload = json.dumps(body or {})
        headers = {"Authorization": f"Token {self.token}", "Content-Type": "application/json"}
        conn.request("POST", path, body=payload, headers=headers)
        response = conn.getresponse()
        data = response.read()
        return response.status, (json.loads(data) if data else {})

    def run(self) -> None:
        # One keep-alive connection per expert, as a browser tab would hold.
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        self.start_together.wait()
        if self.think_s:
            time.sleep(self.rng.uniform(0, self.think_s))  # people do not all start in the same millisecond
        for _ in range(self.items):
            started = time.perf_counter()
            status, slot = self._post(conn, "/api/v1/expert/claim")
            self.claims.append(time.perf_counter() - started)
            if status == 204:
                break
            if status != 200:
                self.errors.append(f"claim {status}: {str(slot)[:200]}")
                continue
            self.received.append(slot["slot"])
            if self.think_s:
                time.sleep(self.rng.uniform(0.5, 1.5) * self.think_s)  # reading the item
            body = {"token": slot["token"], "judgment": self.rng.choice([0, 0.5, 1]),
                    "analysis": slot["jurors"][0]["analysis"] + " (checked)"}  # fmt: skip
            started = time.perf_counter()
            status, label = self._post(conn, f"/api/v1/expert/slots/{slot['slot']}/submit", body)
            self.submits.append(time.perf_counter() - started)
            if status == 201:
                self.acknowledged.append((slot["slot"], label["id"]))
            else:
                self.errors.append(f"submit {status}: {str(label)[:200]}")
        conn.close()


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def _label_everything() -> int:
    """Three expert labels on every queue slot still open, in bulk (for the agreement figure)."""
    from django.db import transaction
    from django.utils import timezone

    from annotation.models import Label
    from experts.models import ExpertQueueItem, ExpertSlot

    rng = random.Random(1)
    now = timezone.now()
    users = {n: f"bulk{n}" for n in range(3)}
    created = 0
    open_slots = list(
        ExpertSlot.objects.filter(status="open").values_list("pk", "item_id", "item__sample_id", "index")
    )
    for start in range(0, len(open_slots), 5000):
        chunk = open_slots[start : start + 5000]
        with transaction.atomic():
            labels = Label.objects.bulk_create(
                [Label(sample_id=sample_id, source_kind="expert", source_name=f"{users[index]}-{item_id}",
                       prompt_version="expert-round-1", judgment=rng.choice([0.0, 0.0, 0.5, 1.0]),
                       analysis="bulk", created_at=now) for _, item_id, sample_id, index in chunk]
            )  # fmt: skip
            slots = [
                ExpertSlot(pk=pk, status="submitted", submitted_at=now, label_id=label.pk)
                for (pk, _, _, _), label in zip(chunk, labels, strict=True)
            ]
            ExpertSlot.objects.bulk_update(slots, ["status", "submitted_at", "label"])
            created += len(labels)
    ExpertQueueItem.objects.update(status="done", decision=0.0, decided_by="majority", decided_at=now)
    return created


def _phase(port: int, tokens: list[str], items: int, think_s: float) -> tuple[list[Expert], float]:
    barrier = threading.Barrier(EXPERTS)
    crowd = [Expert(port, token, items, barrier, seed, think_s) for seed, token in enumerate(tokens)]
    wall = time.perf_counter()
    for expert in crowd:
        expert.start()
    for expert in crowd:
        expert.join()
    return crowd, time.perf_counter() - wall


def _agreement() -> tuple[object, float, float]:
    """The agreement report in-process and the page through Django (best of 3 each)."""
    from django.contrib.auth.models import Group, User
    from django.test import Client

    from experts.agreement import agreement_report

    report, times, page_times = None, [], []
    for _ in range(3):
        t = time.perf_counter()
        report = agreement_report(n=150, seed=0)
        times.append(time.perf_counter() - t)
    reviewer = User.objects.create_user(username="reviewer", password="x")
    reviewer.groups.add(Group.objects.get_or_create(name="reviewer")[0])
    client = Client()
    client.force_login(reviewer)
    for _ in range(3):
        t = time.perf_counter()
        assert client.get("/expert/agreement/").status_code == 200
        page_times.append(time.perf_counter() - t)
    return report, min(times), min(page_times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    samples, queued, per_expert = (20_000, 2_000, 8) if args.quick else (100_000, 10_000, 40)
    database = fresh_database("guardtrace_bench_expert")
    started = time.perf_counter()
    _fill(samples, queued)
    tokens = _experts()
    fill_s = time.perf_counter() - started

    port = _free_port()
    server = _serve(port)
    try:
        # Warm-up, not timed (its labels are checked like the rest): a gunicorn thread's first request sets it up.
        warm_up = _phase(port, tokens, 2, 0.0)[0]
        phases = [
            (name, *_phase(port, tokens, per_expert, think))
            for name, think in (("paced", 1.0), ("saturated", 0.0))
        ]
    finally:
        server.terminate()
        server.wait(timeout=30)

    from annotation.models import Label
    from experts.models import ExpertSlot

    everyone = warm_up + [expert for _, crowd, _ in phases for expert in crowd]
    holders: dict[int, set[str]] = defaultdict(set)
    for expert in everyone:
        for slot in expert.received:
            holders[slot].add(expert.token)
    double_assigned = sum(1 for experts in holders.values() if len(experts) > 1)
    acknowledged = [pair for e in everyone for pair in e.acknowledged]
    stored = dict(ExpertSlot.objects.filter(status="submitted").values_list("pk", "label_id"))
    lost = sum(1 for slot, label in acknowledged if stored.get(slot) != label)
    lost += len(acknowledged) - Label.objects.filter(source_kind="expert").count()
    submitted = ExpertSlot.objects.filter(status="submitted")
    same_item = submitted.values("item", "expert").distinct().count() != submitted.count()
    errors = [err for e in everyone for err in e.errors]
    bulk = _label_everything()
    report, report_s, page_s = _agreement()

    print(f"machine   {machine()}")
    print(
        f"database  {database}; {samples:,} samples, {queued:,} queue items × 3 slots (filled in {fill_s:.0f} s)"
    )
    print(f"load      {EXPERTS} experts at once over HTTP, {per_expert} items each per phase; gunicorn 4 workers × 4 "
          "threads. paced: each expert reads an item 0.5–1.5 s before submitting (~30× faster than a person); "
          "saturated: no pause")  # fmt: skip
    print()
    print(f"{'phase':<11}{'request':<8}{'n':>7}{'median ms':>11}{'p95 ms':>9}{'max ms':>9}{'labels/s':>10}")
    figures = {}
    for name, crowd, wall in phases:
        rate = sum(len(e.submits) for e in crowd) / wall
        for request in ("claim", "submit"):
            values = [t for e in crowd for t in (e.claims if request == "claim" else e.submits)]
            figures[(name, request)] = (statistics.median(values) * 1000, _p(values, 0.95))
            print(f"{name:<11}{request:<8}{len(values):>7}{figures[(name, request)][0]:>11.1f}"
                  f"{figures[(name, request)][1]:>9.1f}{max(values) * 1000:>9.1f}{rate:>10.1f}")  # fmt: skip
    print()
    print(f"agreement over {report.complete_units:,} items (+{bulk:,} bulk labels): report {report_s:.3f} s, "
          f"page {page_s:.3f} s (best of 3); κ = {report.fleiss_kappa:.3f}")  # fmt: skip
    print(f"errors    {len(errors)}{': ' + errors[0] if errors else ''}")
    print(f"same expert on two slots of one item: {'yes' if same_item else 'no'}")
    print()
    print(f"figure claim_p95_ms = {figures[('paced', 'claim')][1]:.1f} ms")
    print(f"figure submit_p95_ms = {figures[('paced', 'submit')][1]:.1f} ms")
    print(f"figure claim_median_ms = {figures[('paced', 'claim')][0]:.1f} ms")
    print(f"figure submit_median_ms = {figures[('paced', 'submit')][0]:.1f} ms")
    print(f"figure saturated_claim_p95_ms = {figures[('saturated', 'claim')][1]:.1f} ms")
    print(f"figure saturated_submit_p95_ms = {figures[('saturated', 'submit')][1]:.1f} ms")
    print(f"figure double_assigned = {double_assigned} slots")
    print(f"figure lost_submissions = {lost} labels")
    print(f"figure agreement_page_s = {page_s:.3f} s")
    sys.exit(1 if errors or double_assigned or lost or same_item else 0)


if __name__ == "__main__":
    main()
