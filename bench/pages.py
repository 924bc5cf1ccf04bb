"""Latency of the dashboard and the sample list with many samples stored.

Run: DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python bench/pages.py [--quick]
(100,000 samples, 200 requests per page; --quick: 10,000 and 50). Requests go through Django's full stack
(middleware, auth, ORM, templates) in-process with the test client. Fresh database `guardtrace_bench_pages`.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from _setup import fresh_database, machine


def _fill(count: int) -> None:
    from django.utils import timezone

    from annotation.models import Label, RiskCategory, Sample, Stratum

    rng = random.Random(0)
    subsets = ["S-Eval-VL", "HADES-Eval", "MM-Eval", "MMJ-Eval"]
    batch = []
    for n in range(count):
        batch.append(Sample(
            question=f"Question {n}: how would someone approach topic {n % 97}?",
            thinking="Step one of the reasoning.\n\nStep two of the reasoning.",
            answer="A refusal with a pointer to help.",
            subset=rng.choice(subsets), split=rng.choice(["train", "test"]),
            category=rng.choice(RiskCategory.values), stratum=rng.choice(Stratum.values),
            content_hash=f"{n:064x}",
        ))  # fmt: skip
        if len(batch) == 5000:
            Sample.objects.bulk_create(batch)
            batch = []
    Sample.objects.bulk_create(batch)
    now = timezone.now()
    ids = list(Sample.objects.values_list("id", flat=True)[:20_000])
    Label.objects.bulk_create(
        [Label(sample_id=i, source_kind="juror", source_name=name, prompt_version="qta-v1", judgment=1.0,
               created_at=now) for i in ids for name in ("a", "b", "c")],
        batch_size=5000,
    )  # fmt: skip


def _measure(client, urls: list[str]) -> list[float]:
    times = []
    for url in urls:
        start = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, (url, response.status_code)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    count, requests = (10_000, 50) if args.quick else (100_000, 200)
    database = fresh_database("guardtrace_bench_pages")

    from django.contrib.auth.models import Group, User
    from django.test import Client

    start = time.perf_counter()
    _fill(count)
    fill_s = time.perf_counter() - start
    user = User.objects.create_user("bench", password="bench")
    user.groups.add(Group.objects.get(name="reviewer"))
    client = Client()
    client.force_login(user)
    rng = random.Random(1)
    pages = count // 50
    scenarios = {
        "dashboard": ["/"] * requests,
        "sample list (random page)": [f"/samples/?page={rng.randint(1, pages)}" for _ in range(requests)],
        "sample list (filtered)": [
            f"/samples/?subset=MM-Eval&stratum=d2_1&page={rng.randint(1, 20)}" for _ in range(requests)
        ],
        "sample list (htmx fragment)": [
            f"/samples/?split=test&page={rng.randint(1, 50)}" for _ in range(requests)
        ],
    }
    _measure(client, ["/", "/samples/"] * 5)  # warm caches and connections
    print(f"machine: {machine()}\ndatabase: {database}, {count:,} samples (filled in {fill_s:.1f} s)\n")
    print(f"{'page':<30}{'requests':>9}{'median ms':>11}{'p95 ms':>9}{'max ms':>9}")
    worst_p95 = 0.0
    for name, urls in scenarios.items():
        if "htmx" in name:
            client.defaults["HTTP_HX_REQUEST"] = "true"
        times = sorted(_measure(client, urls))
        client.defaults.pop("HTTP_HX_REQUEST", None)
        p95 = times[int(len(times) * 0.95) - 1]
        median = statistics.median(times)
        print(f"{name:<30}{len(times):>9}{median:>11.1f}{p95:>9.1f}{times[-1]:>9.1f}")
        if name == "dashboard":
            dashboard_p95 = p95
        else:
            worst_p95 = max(worst_p95, p95)
    print()
    print(f"figure dashboard_p95_ms = {dashboard_p95:.1f} ms")
    print(f"figure list_p95_ms = {worst_p95:.1f} ms")


if __name__ == "__main__":
    main()
