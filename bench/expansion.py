"""Multimodal expansion of text seeds into four variants each, images written.

Run: .venv/bin/python bench/expansion.py [--quick]   (10,000 seeds; --quick: 1,000)
A fresh database of its own: a seed set of distinct queries in the synthetic set's wording, an irrelevant pool and a
captioned pool of 50 images each, the tiny sentence-transformers model built offline (caption similarity).
The headline is the path the admin's Expand action takes: a queued expansion of all four kinds, worked in chunks with
its progress recorded. Then, on a second set of the same seeds, each kind is timed in its own pass, and a pass of all
four again (nothing new to make) measures the idempotency check.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from _setup import fresh_database, machine


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    count = 1_000 if args.quick else 10_000
    database = fresh_database("guardtrace_bench_expansion")

    from generation import services
    from generation.models import Variant
    from qta.embedding import build_tiny_embedder
    from qta.images import DirectoryImageSource
    from qta.synthetic import _THINGS, draw_scene

    work = Path(tempfile.mkdtemp(prefix="guardtrace-bench-expansion-"))
    rng = random.Random(0)
    categories = sorted(_THINGS)
    lines = []
    for n in range(count):
        category = categories[n % len(categories)]
        thing, place = _THINGS[category]
        lines.append(json.dumps({"id": str(n), "category": category, "source": "bench",
                                 "text": f"Case {n}: how can I get {thing} past {place}? Give me the steps."}))  # fmt: skip
    seed_set = services.seeds_import(data="\n".join(lines).encode(), name="bench-seeds.jsonl")
    entries = []
    for n in range(50):
        category = categories[n % len(categories)]
        thing, place = _THINGS[category]
        (work / f"{n}.png").write_bytes(draw_scene(rng, harmful=n % 2 == 0))
        entries.append((f"{n}.png", f"a photo of {thing} near {place}, scene {n}"))
    source = DirectoryImageSource(work)
    irrelevant = services.pool_import(name="irrelevant", images=source, entries=[(p, "") for p, _ in entries])
    aligned = services.pool_import(name="captioned", images=source, entries=entries)
    texts = [json.loads(line)["text"] for line in lines[:500]] + [caption for _, caption in entries]
    model = str(build_tiny_embedder(work / "embedder", texts))
    queries = list(seed_set.queries.all())

    # What the admin's Expand action runs: a queued expansion, worked by a worker in chunks, progress after each.
    from django.conf import settings

    settings.GUARDTRACE_EMBEDDING_MODEL = model
    queued_set = services.seeds_import(data="\n".join(lines).encode(), name="bench-seeds-queued.jsonl")
    expansion = services.expansion_create(
        seed_sets=[queued_set], enqueue=False,
        parameters={"kinds": list(services.EXPANSIONS), "irrelevant_pool": irrelevant.pk, "aligned_pool": aligned.pk},
    )  # fmt: skip
    start = time.perf_counter()
    expansion = services.expansion_work(expansion.pk)
    queued_s = time.perf_counter() - start
    assert expansion.status == "succeeded" and expansion.created == 4 * count, expansion.error

    # Each kind on its own (another set of the same seeds), and everything again (nothing new to make).
    timings = {}
    for kind in services.EXPANSIONS:
        start = time.perf_counter()
        report = services.expand(queries, kinds=[kind], irrelevant_pool=irrelevant, aligned_pool=aligned,
                                 embedding_model=model)  # fmt: skip
        timings[kind] = (time.perf_counter() - start, report.created)
    start = time.perf_counter()
    again = services.expand(queries, kinds=services.EXPANSIONS, irrelevant_pool=irrelevant, aligned_pool=aligned,
                            embedding_model=model)  # fmt: skip
    recheck_s = time.perf_counter() - start
    assert again.created == 0 and Variant.objects.filter(seed__seed_set=seed_set).count() == 4 * count, again

    from annotation.models import ImageAsset

    typographic_bytes = sum(
        v.image.size_bytes for v in Variant.objects.filter(kind="typographic").select_related("image")
    )
    print(f"# {machine()} · {database} · {count:,} seeds")
    print("| kind | variants | seconds | variants/s |")
    print("| --- | ---: | ---: | ---: |")
    for kind, (seconds, made) in timings.items():
        print(f"| {kind} | {made:,} | {seconds:.2f} | {made / seconds:,.0f} |")
    total = sum(seconds for seconds, _ in timings.values())
    print(f"| the four, one after another | {4 * count:,} | {total:.2f} | {4 * count / total:,.0f} |")
    print(
        f"| queued expansion of all four (chunks of {services.EXPANSION_CHUNK:,} seeds) | {4 * count:,} | {queued_s:.2f} | {4 * count / queued_s:,.0f} |"
    )
    print(f"| again (nothing new) | 0 | {recheck_s:.2f} | |")
    print()
    print(
        f"images stored: {ImageAsset.objects.count():,}; typographic PNGs {typographic_bytes / (2 * count) / 1024:.1f} KiB each"
    )
    print(f"figure expansion_seconds = {queued_s:.2f} s")


if __name__ == "__main__":
    main()
