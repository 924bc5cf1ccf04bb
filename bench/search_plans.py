"""Full-text search over long reasoning traces: what the plan costs when every sample matches.

Run: DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python bench/search_plans.py [--quick]
(5,000 samples with 20,000-character traces; --quick: 500); without DATABASE_URL, on SQLite (FTS5). Fresh database
`guardtrace_bench_search_plans`. On PostgreSQL each search runs twice: as the planner would choose on its own, and
inside annotation.search.index_plans (bitmap scans only), which the sample list and the API use. The list's two
queries are timed: the count, and a page of 50 ids from the middle.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from contextlib import nullcontext

from _setup import fresh_database, machine

WORDS_PER_TRACE = 3_000  # about 20,000 characters


def _fill(count: int) -> float:
    from annotation.models import Sample

    rng = random.Random(0)
    stop_words = ["the", "a", "of", "to", "and", "in", "is", "that", "it", "for"]
    vocabulary = [f"term{n}" for n in range(20_000)] + stop_words * 500
    start = time.perf_counter()
    for first in range(0, count, 250):
        Sample.objects.bulk_create(
            [
                Sample(
                    question=f"Question {n}: a common request about topic {n % 50}?",
                    thinking=" ".join(rng.choices(vocabulary, k=WORDS_PER_TRACE)),
                    answer="A careful answer.",
                    content_hash=f"{n:064x}",
                )
                for n in range(first, min(first + 250, count))
            ]
        )
    return time.perf_counter() - start


def _time(query: str, planned: bool, repeats: int) -> tuple[float, str]:
    from django.db import connection

    from annotation import search, selectors

    parsed = search.parse(query)
    ids = selectors.sample_list(filters={}, search=parsed).values_list("id", flat=True)
    times = []
    for _ in range(repeats):
        with search.index_plans(parsed) if planned else nullcontext():
            start = time.perf_counter()
            total = ids.count()
            list(ids[total // 2 : total // 2 + 50])
            times.append((time.perf_counter() - start) * 1000)
            plan = ""
            if connection.vendor == "postgresql":
                sql, params = ids.order_by().query.sql_with_params()
                with connection.cursor() as cursor:
                    cursor.execute("EXPLAIN " + sql, params)
                    plan = cursor.fetchall()[0][0].split("(")[0].strip()
    return statistics.median(times), plan


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    count, repeats = (500, 5) if args.quick else (5_000, 15)
    database = fresh_database("guardtrace_bench_search_plans")

    from django.db import connection

    fill_s = _fill(count)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE annotation_sample")
            cursor.execute("SELECT avg(pg_column_size(search_document)) FROM annotation_sample")
            vector_kb = float(cursor.fetchone()[0]) / 1024
        detail = f", stored vectors {vector_kb:.0f} kB on average"
    else:
        detail = ""
    print(
        f"machine: {machine()}\ndatabase: {database}, {count:,} samples (filled in {fill_s:.1f} s{detail})\n"
    )
    print(f"{'search':<28}{'plans':<16}{'median ms':>10}  first plan node")
    figures = {}
    for name, query in (("every sample (common)", "common"), ("2% of samples (topic 7)", "topic 7")):
        modes = (True, False) if connection.vendor == "postgresql" else (True,)
        for planned in modes:
            median, plan = _time(query, planned, repeats)
            print(f"{name:<28}{'index_plans' if planned else 'planner alone':<16}{median:>10.1f}  {plan}")
            if name.startswith("every"):
                figures["search_long_every_ms" if planned else "search_long_every_unplanned_ms"] = median
    print()
    for figure, value in figures.items():
        print(f"figure {figure} = {value:.1f} ms")


if __name__ == "__main__":
    main()
