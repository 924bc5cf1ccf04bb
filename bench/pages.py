"""Latency of the dashboard and the sample list (filtered, sorted, searched) with many samples stored.

Run: DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python bench/pages.py [--quick]
(100,000 samples, 200 requests per page; --quick: 10,000 and 50); without DATABASE_URL, on SQLite. Requests go
through Django's full stack (middleware, auth, ORM, templates) in-process with the test client. Fresh database
`guardtrace_bench_pages`. Each sample's reasoning names two of TOPICS, so a topic word matches about 4% of the
samples and "reasoning" all of them (the worst case for a search: every sample counted and sorted).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from _setup import fresh_database, machine

TOPICS = [
    "lockpicking", "phishing", "ransomware", "explosives", "poisoning", "surveillance", "counterfeiting", "doxxing",
    "smuggling", "gambling", "stalking", "extortion", "malware", "forgery", "vaping", "dieting", "trespassing",
    "piracy", "scamming", "hacking", "bribery", "arson", "shoplifting", "hazing", "cheating",
    "laundering", "kidnapping", "spyware", "wiretapping", "impersonation", "plagiarism", "sabotage", "vandalism",
    "blackmail", "bootlegging", "carjacking", "cyberbullying", "deepfakes", "embezzlement", "fraud", "grooming",
    "harassment", "insider", "jailbreaking", "keylogging", "looting", "misinformation", "narcotics", "overdose",
    "propaganda",
]  # fmt: skip


def _fill(count: int) -> None:
    from django.utils import timezone

    from annotation.models import Label, RiskCategory, Sample, Stratum

    rng = random.Random(0)
    subsets = ["S-Eval-VL", "HADES-Eval", "MM-Eval", "MMJ-Eval"]
    batch = []
    for n in range(count):
        batch.append(Sample(
            question=f"Question {n}: how would someone approach topic {n % 97}?",
            thinking=f"Step one of the reasoning weighs {rng.choice(TOPICS)}.\n\n"
            f"Step two of the reasoning compares it with {rng.choice(TOPICS)}.",
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


def _settle() -> None:
    """PostgreSQL: vacuum and analyze the filled table, as autovacuum does within a minute or so of a bulk load;
    measured before that, the planner has no statistics and the visibility map is empty (no index-only scans), and
    which of the two states a request meets would depend on when autovacuum woke up."""
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE annotation_sample")


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
    _settle()
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
        "sorted by stratum": [
            f"/samples/?sort=stratum&page={rng.randint(1, pages)}" for _ in range(requests)
        ],
        "search: one word (~4%)": [
            f"/samples/?q={rng.choice(TOPICS)}&page={rng.randint(1, max(1, pages // 25))}"
            for _ in range(requests)
        ],
        "search: two words, newest": [
            f"/samples/?q={rng.choice(TOPICS)}+{rng.choice(TOPICS)}&sort=newest" for _ in range(requests)
        ],
        "search: phrase or word": [
            f"/samples/?q=%22weighs+{rng.choice(TOPICS)}%22+or+{rng.choice(TOPICS)}&page=2"
            for _ in range(requests)
        ],
        "search + filters, by stratum": [
            f"/samples/?q={rng.choice(TOPICS)}&subset=MM-Eval&split=test&sort=stratum"
            for _ in range(requests)
        ],
        "search: every sample matches": [
            f"/samples/?q=reasoning&page={rng.randint(1, pages)}" for _ in range(requests)
        ],
    }
    _measure(client, ["/", "/samples/"] * 5)  # warm caches and connections
    print(f"machine: {machine()}\ndatabase: {database}, {count:,} samples (filled in {fill_s:.1f} s)\n")
    print(f"{'page':<32}{'requests':>9}{'median ms':>11}{'p95 ms':>9}{'max ms':>9}")
    worst_p95 = search_p95 = 0.0
    for name, urls in scenarios.items():
        if "htmx" in name:
            client.defaults["HTTP_HX_REQUEST"] = "true"
        times = sorted(_measure(client, urls))
        client.defaults.pop("HTTP_HX_REQUEST", None)
        p95 = times[int(len(times) * 0.95) - 1]
        median = statistics.median(times)
        print(f"{name:<32}{len(times):>9}{median:>11.1f}{p95:>9.1f}{times[-1]:>9.1f}")
        if name == "dashboard":
            dashboard_p95 = p95
        elif name.startswith("search"):
            search_p95 = max(search_p95, p95)
        else:
            worst_p95 = max(worst_p95, p95)
    print()
    print(f"figure dashboard_p95_ms = {dashboard_p95:.1f} ms")
    print(f"figure list_p95_ms = {worst_p95:.1f} ms")
    print(f"figure list_search_p95_ms = {search_p95:.1f} ms")


if __name__ == "__main__":
    main()
