"""Training throughput and memory of the rounds' child process: SFT and DPO, full fine-tuning and LoRA.

Run: .venv/bin/python bench/training_gpu.py [--quick]
On a GPU machine: a randomly-initialised model with the real Qwen2.5-VL-3B configuration (built offline, our
tokenizer), the default hyperparameters (bf16, per-device batch 4 × gradient accumulation 8, gradient checkpointing,
vision tower frozen), synthetic QTA rows with images, a few optimiser steps per configuration, each in its own runner
process (`python -m qta.runner`, as a round runs). Reports optimiser steps/s (after the first step) and peak
GPU memory. Without a GPU, or with --quick, the tiny checkpoint on the CPU runs the same path as a smoke test; its
figures say nothing about a GPU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from _setup import ROOT, fresh_database, machine

sys.path.insert(0, str(ROOT))

CONFIGS = [("sft", False), ("sft", True), ("dpo", False), ("dpo", True)]


def _rows(folder: Path, count: int) -> list[dict]:
    from qta import protocol
    from qta.synthetic import generate

    generate(folder, count=count, seed=5)
    rows = []
    for line in (folder / "samples.jsonl").read_text().splitlines():
        record = json.loads(line)
        label = record["label"]
        other = 0.0 if label else 1.0
        rows.append({
            "question": record["question"], "thinking": record["thinking"], "answer": record["answer"],
            "image_path": str(folder / record["image"]) if record["image"] else None,
            "target": protocol.format_target(analysis="The reasoning was checked.", judgment=label),
            "chosen": protocol.format_target(analysis="The reasoning was checked.", judgment=label),
            "rejected": protocol.format_target(analysis="Looks fine.", judgment=other),
        })  # fmt: skip
    return rows


def _build(real: bool, folder: Path) -> Path:
    from guardmodel.management.commands.build_tiny_guard import synthetic_texts
    from qta.tiny import TinySpec, build_tiny_guard

    if not real:
        return build_tiny_guard(folder, texts=synthetic_texts())
    # Qwen2.5-VL-3B's sizes (text 2048 × 36 layers, vision 1280 × 32 blocks), random weights.
    spec = TinySpec(hidden_size=2048, layers=36, heads=16, kv_heads=2, intermediate_size=11008,
                    vision_depth=32, vision_hidden=1280, vocab_size=4096, max_pixels=1280 * 28 * 28)  # fmt: skip
    return build_tiny_guard(folder, texts=synthetic_texts(), spec=spec)


def _run(work: Path, base: Path, stage: str, lora: bool, rows: list[dict], real: bool, steps: int) -> dict:
    from qta.hyper import for_stage

    hp = for_stage(
        stage, tiny=not real, lora=lora, epochs=1.0, logging_steps=1, save_steps=10_000, warmup_ratio=0.0
    )
    per_step = hp.batch_size * hp.gradient_accumulation
    run_dir = work / f"{stage}-{'lora' if lora else 'full'}"
    run_dir.mkdir()
    with (run_dir / "dataset.jsonl").open("w") as out:
        for row in (rows * (1 + per_step * steps // len(rows)))[: per_step * steps]:
            out.write(json.dumps(row) + "\n")
    config = {"stage": stage, "base": str(base), "reference": str(base), "hyperparameters": hp.to_dict(),
              "device": "cuda" if real else "cpu", "threads": 0}  # fmt: skip
    (run_dir / "config.json").write_text(json.dumps(config))
    with (run_dir / "log.txt").open("wb") as log:
        code = subprocess.run([sys.executable, "-m", "qta.runner", str(run_dir)], cwd=ROOT, stdout=log,
                              stderr=subprocess.STDOUT).returncode  # fmt: skip
    if code != 0:
        error = run_dir / "error.json"
        return {
            "error": json.loads(error.read_text())["message"][:200] if error.is_file() else f"exit {code}"
        }
    events = [json.loads(line) for line in (run_dir / "progress.jsonl").read_text().splitlines()]
    logs = [e for e in events if e["event"] == "log" and "loss" in e]
    done = next(e for e in events if e["event"] == "done")
    rate = (
        (logs[-1]["step"] - logs[0]["step"]) / (logs[-1]["time"] - logs[0]["time"]) if len(logs) > 1 else None
    )
    return {"steps": done["step"], "samples_per_step": per_step, "steps_per_s": rate,
            "peak_gpu_mb": done.get("peak_gpu_mb"), "peak_rss_mb": done.get("peak_rss_mb")}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    fresh_database("bench_training_gpu")  # the tokenizer's corpus helper lives in a Django app
    import torch

    real = torch.cuda.is_available() and not args.quick
    steps = 4 if real else 3
    work = Path(tempfile.mkdtemp(prefix="guardtrace-bench-train-"))
    rows = _rows(work / "set", 64)
    base = _build(real, work / "base")
    model = "Qwen2.5-VL-3B config (random weights), GPU" if real else "tiny checkpoint, CPU (smoke run)"
    print(f"# {machine()} · {model} · {steps} optimiser steps per configuration")
    print("| round | weights | samples/step | steps/s | samples/s | peak GPU MB | peak RSS MB |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    figures = []
    for stage, lora in CONFIGS:
        result = _run(work, base, stage, lora, rows, real, steps)
        name = f"{stage}_{'lora' if lora else 'full'}"
        if "error" in result:
            print(f"| {stage.upper()} | {'LoRA' if lora else 'full'} | failed: {result['error']} | | | | |")
            continue
        rate = result["steps_per_s"]
        gpu = result["peak_gpu_mb"]
        print(f"| {stage.upper()} | {'LoRA' if lora else 'full'} | {result['samples_per_step']} | "
              f"{rate:.3f} | {rate * result['samples_per_step']:.2f} | {gpu or 0:.0f} | {result['peak_rss_mb']:.0f} |")  # fmt: skip
        figures.append(f"figure {name}_steps_per_s = {rate:.3f} steps/s")
        if gpu:
            figures.append(f"figure {name}_peak_gpu_mb = {gpu:.0f} MB")
    print()
    for line in figures:
        print(line)


if __name__ == "__main__":
    main()
