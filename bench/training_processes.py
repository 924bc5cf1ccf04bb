"""A training round in one process against two data-parallel processes with the same effective batch, on CPU.

Run: .venv/bin/python bench/training_processes.py [--quick]

The tiny Qwen2.5-VL guard is trained (SFT, the runner's own child processes, as a round runs them) on a synthetic
set: once as one process with batch 8 and all cores, once as two processes under `accelerate launch --multi_gpu`
(torch.distributed with gloo on a CPU, as NCCL on GPUs) with batch 4 each and half the cores each. Both then judge
the same synthetic test set: F1 of harmful (0.5 read as harmful). On 2 cores two processes cannot be faster than one
using both: the figure to read is that they train to the same quality; the speed-up is for machines with a GPU per
process. --quick: a smaller set and one epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _setup import ROOT, machine

sys.path.insert(0, str(ROOT))


def _train(run_dir: Path, base: Path, rows: list[dict], hp, processes: int) -> float:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "dataset.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = {"stage": "sft", "base": str(base), "reference": None, "hyperparameters": hp.to_dict(),
              "device": "cpu", "threads": os.cpu_count() or 1}  # fmt: skip
    (run_dir / "config.json").write_text(json.dumps(config))
    command = [sys.executable, "-m", "qta.runner", str(run_dir)]
    if processes > 1:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
                   str(processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                   "--main_process_port", str(port), "-m", "qta.runner", str(run_dir)]  # fmt: skip
    started = time.perf_counter()
    with (run_dir / "log.txt").open("wb") as log:
        code = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    if code != 0:
        raise SystemExit(f"training in {run_dir} failed (exit {code}); see {run_dir / 'log.txt'}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    from guard_scores import _records, _sft_rows

    from qta.engine import AuditInput, EngineOptions, TransformersGuard
    from qta.hyper import for_stage
    from qta.tiny import build_tiny_guard

    work = Path(tempfile.mkdtemp(prefix="guardtrace-bench-processes-"))
    count, epochs = (160, 1.0) if args.quick else (480, 6.0)
    base = build_tiny_guard(work / "base")
    train = [r for r in _records(work / "train", count, seed=7) if r["split"] == "train"]
    rows = _sft_rows(train)
    test = _records(work / "test", 160 if args.quick else 320, seed=99)
    results = []
    for processes, batch in ((1, 8), (2, 4)):
        hp = for_stage("sft", tiny=True, seed=1, epochs=epochs, batch_size=batch)
        run_dir = work / f"run-{processes}"
        seconds = _train(run_dir, base, rows, hp, processes)
        events = [json.loads(line) for line in (run_dir / "progress.jsonl").read_text().splitlines()]
        final = next(e for e in reversed(events) if e["event"] == "log" and "train_loss" in e)
        start = next(e for e in events if e["event"] == "start")
        guard = TransformersGuard(run_dir / "model", EngineOptions(max_new_tokens=48))
        verdicts = guard.judge([
            AuditInput(r["question"], r["thinking"], r["answer"],
                       Path(r["image"]).read_bytes() if r["image"] else None) for r in test
        ])  # fmt: skip
        tp = sum(v.judgment is not None and v.judgment >= 0.5 and r["label"] >= 0.5
                 for v, r in zip(verdicts, test, strict=True))  # fmt: skip
        predicted = sum(v.judgment is not None and v.judgment >= 0.5 for v in verdicts)
        actual = sum(r["label"] >= 0.5 for r in test)
        f1 = 2 * tp / max(1, predicted + actual)
        results.append({
            "processes": start.get("processes", processes), "batch": batch, "steps": final["step"],
            "seconds": seconds, "samples_s": len(rows) * epochs / final["train_runtime"],
            "loss": final["train_loss"], "f1": f1,
        })  # fmt: skip
    print(
        f"machine: {machine()} · {len(rows)} samples × {epochs:g} epochs, effective batch 8, F1 on {len(test)}"
    )
    print(
        f"{'processes':>10}{'batch each':>12}{'updates':>9}{'wall s':>9}{'samples/s':>11}{'final loss':>12}{'F1':>8}"
    )
    for r in results:
        print(f"{r['processes']:>10}{r['batch']:>12}{r['steps']:>9}{r['seconds']:>9.1f}{r['samples_s']:>11.1f}"
              f"{r['loss']:>12.4f}{r['f1']:>8.3f}")  # fmt: skip
    one, two = results
    print(f"figure train_1proc_samples_per_s = {one['samples_s']:.1f} samples/s")
    print(f"figure train_2proc_samples_per_s = {two['samples_s']:.1f} samples/s")
    print(f"figure train_2proc_loss_ratio = {two['loss'] / one['loss']:.3f} x")
    print(f"figure train_1proc_f1 = {one['f1']:.3f}")
    print(f"figure train_2proc_f1 = {two['f1']:.3f}")


if __name__ == "__main__":
    main()
