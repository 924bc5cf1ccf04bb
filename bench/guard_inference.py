"""Batched guard engine vs a one-sample-at-a-time loop like the paper's released evaluation script.

Run: .venv/bin/python bench/guard_inference.py [--quick] [--real-3b]
Same tiny checkpoint (built offline), same samples (the synthetic set: text-only and image samples), same
max_new_tokens, greedy. The loop: for each sample, chat template → processor → generate → decode. The engine: the
same work in length-sorted, left-padded batches of 1, 4 and 16. Each configuration runs in a fresh process, so its
peak resident memory is its own. `--real-3b` (GPU machines): a randomly-initialised model with the real
Qwen2.5-VL-3B configuration instead of the tiny one, reporting samples/s and generated tokens/s.
Full: 200 samples, 32 new tokens. --quick: 32 samples, 8 new tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _setup import ROOT, machine

sys.path.insert(0, str(ROOT))


def _samples(count: int) -> list:
    from qta.engine import AuditInput
    from qta.synthetic import generate

    folder = Path(tempfile.mkdtemp(prefix="guardtrace-bench-guard-"))
    generate(folder, count=count, seed=7)
    items = []
    for line in (folder / "samples.jsonl").read_text().splitlines():
        record = json.loads(line)
        image = (folder / record["image"]).read_bytes() if record["image"] else None
        items.append(AuditInput(record["question"], record["thinking"], record["answer"], image))
    return items


def _paper_loop(model_dir: str, items: list, max_new_tokens: int) -> tuple[int, list[str]]:
    """One sample at a time, as the released evaluation script does."""
    import torch

    from qta import protocol
    from qta.engine import decode_image
    from qta.loading import choose_placement, load_model, load_processor

    placement = choose_placement()
    processor = load_processor(model_dir)
    model = load_model(model_dir, placement)
    outputs, generated = [], 0
    for item in items:
        messages = protocol.build_messages(question=item.question, thinking=item.thinking, answer=item.answer,
                                           has_image=item.image is not None)  # fmt: skip
        text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        images = [decode_image(item.image)] if item.image else None
        inputs = processor(text=[text], images=images, return_tensors="pt").to(placement.device)
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        new = out[0, inputs["input_ids"].shape[1] :]
        generated += int(new.numel())
        outputs.append(processor.tokenizer.decode(new, skip_special_tokens=True))
    return generated, outputs


def _engine(model_dir: str, items: list, max_new_tokens: int, batch_size: int) -> tuple[int, list[str]]:
    from qta.engine import EngineOptions, TransformersGuard

    guard = TransformersGuard(model_dir, EngineOptions(max_new_tokens=max_new_tokens, batch_size=batch_size))
    verdicts = guard.judge(items)
    return sum(v.completion_tokens for v in verdicts), [v.raw_output for v in verdicts]


def _child(mode: str, model_dir: str, count: int, max_new_tokens: int, batch_size: int) -> None:
    import torch

    torch.manual_seed(0)
    items = _samples(count)
    # Warm-up on two samples (kernels, allocator), not timed.
    (_paper_loop if mode == "loop" else lambda d, i, m: _engine(d, i, m, batch_size))(model_dir, items[:2], 2)
    started = time.perf_counter()
    if mode == "loop":
        generated, outputs = _paper_loop(model_dir, items, max_new_tokens)
    else:
        generated, outputs = _engine(model_dir, items, max_new_tokens, batch_size)
    seconds = time.perf_counter() - started
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    peak_gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "generated": generated, "rss_mb": rss, "gpu_mb": peak_gpu,
                      "outputs": outputs}))  # fmt: skip


def _build(real_3b: bool) -> str:
    folder = Path(tempfile.mkdtemp(prefix="guardtrace-bench-model-")) / "guard"
    from qta.tiny import TinySpec, build_tiny_guard

    if not real_3b:
        return str(build_tiny_guard(folder, spec=TinySpec(initializer_range=0.6)))
    # The real Qwen2.5-VL-3B sizes (text 2048×36 layers, vision 1280×32 blocks), random weights, our tokenizer.
    spec = TinySpec(hidden_size=2048, layers=36, heads=16, kv_heads=2, intermediate_size=11008,
                    vision_depth=32, vision_hidden=1280, vocab_size=4096, max_pixels=1280 * 28 * 28)  # fmt: skip
    return str(build_tiny_guard(folder, spec=spec))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--real-3b", action="store_true")
    parser.add_argument("--child", nargs=5, metavar=("MODE", "DIR", "COUNT", "TOKENS", "BATCH"))
    args = parser.parse_args()
    if args.child:
        mode, model_dir, count, tokens, batch = args.child
        _child(mode, model_dir, int(count), int(tokens), int(batch))
        return
    count, tokens = (32, 8) if args.quick else (200, 32)
    model_dir = _build(args.real_3b)
    print(
        f"# {machine()} · {count} samples · max_new_tokens {tokens} · model {'Qwen2.5-VL-3B config' if args.real_3b else 'tiny'}"
    )
    results = {}
    for mode, batch in [("loop", 1), ("engine", 1), ("engine", 4), ("engine", 16)]:
        command = [sys.executable, __file__, "--child", mode, model_dir, str(count), str(tokens), str(batch)]
        done = subprocess.run(
            command, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"}
        )
        if done.returncode:
            sys.exit(done.stderr[-3000:])
        results[(mode, batch)] = json.loads(done.stdout.strip().splitlines()[-1])
    loop = results[("loop", 1)]
    print(
        f"| {'run':<22} | {'seconds':>8} | {'samples/s':>9} | {'gen tok/s':>9} | {'speed-up':>8} | {'peak RSS MB':>11} | same outputs |"
    )
    print(f"| {'-' * 22} | {'-' * 8}:| {'-' * 9}:| {'-' * 9}:| {'-' * 8}:| {'-' * 11}:| --- |")
    for (mode, batch), r in results.items():
        name = "one-at-a-time loop" if mode == "loop" else f"engine, batch {batch}"
        same = sum(a == b for a, b in zip(r["outputs"], loop["outputs"], strict=True))
        print(f"| {name:<22} | {r['seconds']:>8.2f} | {count / r['seconds']:>9.2f} | {r['generated'] / r['seconds']:>9.1f} | "
              f"{loop['seconds'] / r['seconds']:>7.2f}x | {r['rss_mb']:>11.0f} | {same}/{count} |")  # fmt: skip
    b16 = results[("engine", 16)]
    print(f"figure batched_speedup = {loop['seconds'] / b16['seconds']:.2f} x")
    print(f"figure peak_rss_mb = {b16['rss_mb']:.0f} MB")
    if b16["gpu_mb"]:
        print(f"figure peak_gpu_mb = {b16['gpu_mb']:.0f} MB")
        print(f"figure samples_per_s = {count / b16['seconds']:.2f} samples/s")
        print(f"figure generated_tokens_per_s = {b16['generated'] / b16['seconds']:.1f} tokens/s")


if __name__ == "__main__":
    main()
