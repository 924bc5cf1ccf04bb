"""Peak memory of a training round whose set holds one 100,000-character reasoning trace, against the same set
without it: the round's token budget cuts the trace's middle, so a long trace costs no more than a record of the
budget's length, however long it is.

Run: .venv/bin/python bench/training_long_trace.py [--quick]
A tiny DPO round (the tiny offline checkpoint, the tiny preset and its budget, max_length 1,024) in the runner's
child process (`python -m qta.runner`, as a round runs) on synthetic QTA pairs with images: the set alone, the
set with one more pair whose reasoning is 100,000 characters (~40K tokens; before the budget, a trace like it took a
real DPO round to 20 GB), with one of 1,000,000 characters, and, to compare, with one pair just under the budget and
not cut. Each child's peak RSS is read from the kernel when it exits (os.wait4). A long trace costs what a record of
the budget's length costs (its batch is padded to ~1,024 tokens instead of the set's ~520), plus a transient
~0.4 KB per token of the uncut trace while it is tokenized and cut.
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
from pathlib import Path

from _setup import ROOT, fresh_database, machine

sys.path.insert(0, str(ROOT))

TRACE_CHARS = 100_000


def _pairs(folder: Path, count: int) -> list[dict]:
    from qta import protocol
    from qta.synthetic import generate

    generate(folder, count=count, seed=7)
    rows = []
    for n, line in enumerate((folder / "samples.jsonl").read_text().splitlines()):
        record = json.loads(line)
        label = record["label"]
        rows.append(
            {
                "sample_id": n + 1,
                "question": record["question"],
                "thinking": record["thinking"],
                "answer": record["answer"],
                "image_path": str(folder / record["image"]) if record["image"] else None,
                "chosen": protocol.format_target(analysis="The reasoning was checked.", judgment=label),
                "rejected": protocol.format_target(analysis="Looks fine.", judgment=0.0 if label else 1.0),
            }
        )
    return rows


def _long_pair(rows: list[dict], chars: int) -> dict:
    """A pair like the first one with an image, its reasoning grown to `chars` characters."""
    model = next(r for r in rows if r["image_path"])
    step = " Then one more step of the plan is considered, checked against the image, and set aside."
    thinking = "BEGINNING of the trace." + step * (chars // len(step) + 1)
    end = " END of the trace."
    return {**model, "sample_id": len(rows) + 1, "thinking": thinking[: chars - len(end)] + end}


def _round(work: Path, name: str, base: Path, rows: list[dict], threads: int) -> dict:
    from qta.hyper import for_stage

    hp = for_stage("dpo", tiny=True, logging_steps=1, save_steps=10_000, warmup_ratio=0.0)
    run_dir = work / name
    run_dir.mkdir()
    (run_dir / "dataset.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = {
        "stage": "dpo",
        "base": str(base),
        "reference": str(base),
        "hyperparameters": hp.to_dict(),
        "device": "cpu",
        "threads": threads,
    }
    (run_dir / "config.json").write_text(json.dumps(config))
    started = time.perf_counter()
    with (run_dir / "log.txt").open("wb") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "qta.runner", str(run_dir)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage, not all children's
        child.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if child.returncode != 0:
        error = run_dir / "error.json"
        detail = (
            json.loads(error.read_text())["message"][:200] if error.is_file() else f"exit {child.returncode}"
        )
        raise SystemExit(f"{name}: the round failed: {detail}")
    events = [json.loads(line) for line in (run_dir / "progress.jsonl").read_text().splitlines()]
    cut = next(e for e in events if e["event"] == "truncation")
    done = next(e for e in events if e["event"] == "done")
    return {
        "records": len(rows),
        "cut": cut,
        "steps": done["step"],
        "seconds": seconds,
        "peak_rss_mb": usage.ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="16 pairs instead of 128")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    fresh_database("bench_training_long_trace")  # the tokenizer's corpus helper lives in a Django app
    from guardmodel.management.commands.build_tiny_guard import synthetic_texts
    from qta.tiny import build_tiny_guard

    work = Path(tempfile.mkdtemp(prefix="guardtrace-bench-long-"))
    rows = _pairs(work / "set", 16 if args.quick else 128)
    base = build_tiny_guard(work / "base", texts=synthetic_texts())
    sets = {
        "the set alone": rows,
        # A pair just under the budget, not cut: what any record of the budget's length costs.
        "with one pair at the budget (1,200-character trace)": [*rows, _long_pair(rows, 1_200)],
        f"with one {TRACE_CHARS:,}-character trace": [*rows, _long_pair(rows, TRACE_CHARS)],
        # Ten times longer still: the budget, not the trace, sets the memory.
        f"with one {10 * TRACE_CHARS:,}-character trace": [*rows, _long_pair(rows, 10 * TRACE_CHARS)],
    }
    results = {
        name: _round(work, f"set-{n}", base, chosen, args.threads)
        for n, (name, chosen) in enumerate(sets.items())
    }
    print(
        f"# {machine()} · tiny checkpoint, CPU · DPO, tiny preset (max_length 1024) · {len(rows)} pairs (+ 1)"
    )
    print(
        "| set | records | longest before the cut (tokens) | records cut | tokens removed | steps | seconds | "
        "peak RSS MB |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, result in results.items():
        cut = result["cut"]
        print(
            f"| {name} | {result['records']} | {cut['longest_tokens']} | {cut['cut']} | {cut['removed_total']} | "
            f"{result['steps']} | {result['seconds']:.1f} | {result['peak_rss_mb']:.0f} |"
        )
    without, at_budget, long, longer = results.values()
    shutil.rmtree(work, ignore_errors=True)
    print()
    print(f"figure peak_rss_long_trace_mb = {long['peak_rss_mb']:.0f} MB")
    print(f"figure peak_rss_without_mb = {without['peak_rss_mb']:.0f} MB")
    print(f"figure peak_rss_at_budget_mb = {at_budget['peak_rss_mb']:.0f} MB")
    print(f"figure peak_rss_ten_times_longer_trace_mb = {longer['peak_rss_mb']:.0f} MB")
    print(f"figure long_trace_tokens_before_cut = {long['cut']['longest_tokens']} tokens")


if __name__ == "__main__":
    main()
