"""The cost of scoring a reasoning trace step by step (qta/scores.py `score_prefixes`): the k-th appended step with
the key/value cache of the previous prefix kept, against scoring the whole prefix afresh, at k = 1, 8 and 32.

Run: .venv/bin/python bench/prefix_scoring.py [--quick]
(a tiny random Qwen2.5-VL guard built offline, text only, a 32-step trace of about 60 tokens per step, 3 repeats;
--quick: 1 repeat). CPU, torch threads as the machine gives. Target: flat in k, ≥ 5× cheaper than afresh at k = 32.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _setup import ROOT, machine

sys.path.insert(0, str(ROOT))

STEP = "Then the reasoning considers one more aspect of the request in some detail, weighing what it would enable."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeats = 1 if args.quick else 3
    from qta.engine import AuditInput, EngineOptions, TransformersGuard
    from qta.tiny import TinySpec, build_tiny_guard

    folder = Path(tempfile.mkdtemp(prefix="guardtrace-bench-prefix-")) / "guard"
    build_tiny_guard(folder, spec=TinySpec(initializer_range=0.6, seed=3))
    guard = TransformersGuard(folder, EngineOptions(max_new_tokens=4))
    steps = [f"Step {i}: {STEP}" for i in range(1, 33)]

    def prompt(k: int) -> str:
        thinking = "\n\n".join(steps[:k])
        return guard._render(AuditInput("How would one do it?", thinking, ""), thinking, False)

    texts = [prompt(k) + "Judgment: " for k in range(1, 33)]
    tokens = [len(guard.tokenizer.encode(t)) for t in texts]
    cached: dict[int, list[float]] = {1: [], 8: [], 32: []}
    afresh: dict[int, list[float]] = {1: [], 8: [], 32: []}
    for _ in range(repeats):
        timings: list[float] = []
        guard.scorer.score_prefixes(texts, None, timings)
        for k in cached:
            cached[k].append(timings[k - 1])
        for k in afresh:
            started = time.perf_counter()
            guard.scorer.score([(prompt(k), None, "Judgment: 1")])
            afresh[k].append(time.perf_counter() - started)
    print(f"machine: {machine()} · {repeats} repeat(s)")
    print(f"{'k':>4}{'prefix tokens':>15}{'cached ms':>11}{'afresh ms':>11}{'ratio':>8}")
    for k in cached:
        c, a = statistics.median(cached[k]) * 1000, statistics.median(afresh[k]) * 1000
        print(f"{k:>4}{tokens[k - 1]:>15}{c:>11.1f}{a:>11.1f}{a / c:>8.1f}")
    c1, c32 = statistics.median(cached[1]), statistics.median(cached[32])
    print(f"figure prefix_step_ms_k32 = {c32 * 1000:.1f} ms")
    print(f"figure prefix_speedup_k32 = {statistics.median(afresh[32]) / c32:.1f} x")
    print(f"figure prefix_growth_k32_over_k1 = {c32 / c1:.2f} x")


if __name__ == "__main__":
    main()
