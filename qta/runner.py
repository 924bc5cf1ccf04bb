"""The training child process: one SFT / DPO / OGDPO round with TRL, driven by files in its run directory.

    python -m qta.runner var/training/runs/<id>
    accelerate launch --num_processes N -m qta.runner var/training/runs/<id>     # more than one GPU

Reads `config.json` (stage, base and reference checkpoint paths, hyperparameters, device, and the prompt template
the new checkpoint will be asked with: the built-in QTA one when absent) and `dataset.jsonl` (snapshot records with
`image_path`). Records longer than the token budget (`max_length`) lose the middle of their reasoning first, as
inference cuts them. Appends one JSON line per event to `progress.jsonl` (truncation, start, log, saved, done),
keeps resumable checkpoints under `checkpoints/`, writes the final model to `model/`, and on any error writes
`error.json` (type, message, traceback, whether it ran out of memory) and exits 1. No Django: the worker that
started it reads these files. It exits when that worker dies, so an orphan never holds the GPU.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from qta import protocol, training_records
from qta.hyper import Hyperparameters

TERMINATED_BY_DRIVER_DEATH = 5


class Progress:
    def __init__(self, path: Path, main_process: bool = True):
        self.path = path
        self.main = main_process

    def write(self, event: str, **data: Any) -> None:
        if not self.main:
            return
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps({"event": event, "time": time.time(), **data}) + "\n")


def _watch_driver(interval: float = 1.0) -> None:
    """Exit when the worker driving this round is gone (GUARDTRACE_TRAIN_DRIVER_PID, else the parent)."""
    driver = int(os.environ.get("GUARDTRACE_TRAIN_DRIVER_PID") or os.getppid())

    def watch() -> None:
        while True:
            time.sleep(interval)
            try:
                os.kill(driver, 0)
            except ProcessLookupError:
                os._exit(TERMINATED_BY_DRIVER_DEATH)
            except PermissionError:
                pass

    threading.Thread(target=watch, daemon=True, name="driver-watch").start()


def _callback(progress: Progress):
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            progress.write(
                "start", max_steps=state.max_steps, step=state.global_step, processes=args.world_size
            )

        def on_log(self, args, state, control, logs=None, **kwargs):
            numbers = {k: v for k, v in (logs or {}).items() if isinstance(v, int | float)}
            progress.write("log", step=state.global_step, max_steps=state.max_steps, **numbers)

        def on_save(self, args, state, control, **kwargs):
            progress.write("saved", step=state.global_step)

    return ProgressCallback()


def load_rows(
    dataset_path: Path,
    stage: str,
    hp: Hyperparameters,
    *,
    processor: Any,
    template: protocol.Template | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The TRL rows of the round, each within the token budget (`hp.max_length`; over-long records lose the middle
    of their reasoning), asked with the round's template; and the truncation report."""
    from PIL import Image

    template = training_records.round_template(template, hp.prompt_variant)
    records = [json.loads(line) for line in dataset_path.read_text(encoding="utf-8").splitlines()]
    images: list[list[Any]] = []
    for record in records:
        if record.get("image_path") and not hp.withhold_image:
            with Image.open(record["image_path"]) as image:
                images.append([image.convert("RGB")])
        else:
            images.append([])
    sizes = [(found[0].height, found[0].width) if found else None for found in images]
    fitter = training_records.RecordBudget(processor, template=template, stage=stage, budget=hp.max_length)
    records, report = fitter.fit_all(records, sizes)
    rows = [
        training_records.trl_row(r, stage, found, template=template)
        for r, found in zip(records, images, strict=True)
    ]
    return rows, report


def _prepare_model(path: str, hp: Hyperparameters, placement):
    from qta.loading import load_model

    model = load_model(path, placement)
    model.train()
    if hp.freeze_vision:
        for name, parameter in model.named_parameters():
            if "visual" in name:
                parameter.requires_grad_(False)
    return model


def _peft_config(hp: Hyperparameters):
    if not hp.lora:
        return None
    from peft import LoraConfig

    # The language model's projections only: the vision blocks name theirs qkv / proj.
    return LoraConfig(
        r=hp.lora_r, lora_alpha=hp.lora_alpha, lora_dropout=0.05, task_type="CAUSAL_LM",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    )  # fmt: skip


def _dpo_loss(hp: Hyperparameters) -> dict[str, Any]:
    if not hp.sft_weight:
        return {"loss_type": ["sigmoid"]}
    return {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, hp.sft_weight]}


def _common_args(config: dict, hp: Hyperparameters, run_dir: Path) -> dict[str, Any]:
    cpu = config["device"] == "cpu"
    return {
        "output_dir": str(run_dir / "checkpoints"),
        # Every record was cut to this budget already (`load_rows`), so TRL's own truncation, which would cut
        # image tokens and completions, never applies; None would let one long trace take all the memory.
        "max_length": hp.max_length,
        "use_cpu": cpu,
        "bf16": not cpu,
        "per_device_train_batch_size": hp.batch_size,
        "gradient_accumulation_steps": hp.gradient_accumulation,
        "num_train_epochs": hp.epochs,
        "learning_rate": hp.learning_rate,
        "lr_scheduler_type": "cosine",
        "warmup_steps": hp.warmup_ratio,
        "weight_decay": hp.weight_decay,
        "logging_steps": hp.logging_steps,
        "save_strategy": "steps",
        "save_steps": hp.save_steps,
        "save_total_limit": 2,
        "report_to": [],
        "seed": hp.seed,
        "gradient_checkpointing": hp.gradient_checkpointing,
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
    }


def train(run_dir: Path) -> None:
    import torch
    from datasets import Dataset

    from qta.loading import choose_placement, load_processor

    config = json.loads((run_dir / "config.json").read_text())
    hp = Hyperparameters.from_dict(config["hyperparameters"])
    rank = int(os.environ.get("RANK", "0"))
    progress = Progress(run_dir / "progress.jsonl", main_process=rank == 0)
    if config["device"] == "cpu":
        # Processes on one machine's CPU share its cores: each takes its share (gloo runs them, as NCCL on GPUs).
        world = int(os.environ.get("WORLD_SIZE", "1"))
        torch.set_num_threads(max(1, int(config.get("threads") or os.cpu_count() or 1) // world))
    stage = config["stage"]
    placement = choose_placement(
        "cpu" if config["device"] == "cpu" else "cuda", "float32" if config["device"] == "cpu" else "bfloat16"
    )
    processor = load_processor(config["base"], max_pixels=hp.max_pixels)
    processor.tokenizer.padding_side = "right"
    template = training_records.template_from_spec(config.get("template"))
    rows, truncation = load_rows(run_dir / "dataset.jsonl", stage, hp, processor=processor, template=template)
    progress.write("truncation", **truncation)
    dataset = Dataset.from_list(rows)
    model = _prepare_model(config["base"], hp, placement)
    callbacks = [_callback(progress)]
    if stage == "sft":
        from trl import SFTConfig, SFTTrainer

        trainer: Any = SFTTrainer(
            model=model, args=SFTConfig(**_common_args(config, hp, run_dir)), train_dataset=dataset,
            processing_class=processor, peft_config=_peft_config(hp), callbacks=callbacks,
        )  # fmt: skip
    else:
        from trl import DPOConfig, DPOTrainer

        # With LoRA the reference is the policy with its adapter off (base and reference are the same weights).
        reference = None if hp.lora else _prepare_model(config["reference"], hp, placement).eval()
        trainer = DPOTrainer(
            model=model, ref_model=reference, args=DPOConfig(beta=hp.beta, **_dpo_loss(hp), **_common_args(config, hp, run_dir)),
            train_dataset=dataset, processing_class=processor, peft_config=_peft_config(hp), callbacks=callbacks,
        )  # fmt: skip
    last = last_complete_checkpoint(run_dir / "checkpoints")
    if last is not None:
        progress.write("resume", checkpoint=last.name)
    trainer.train(resume_from_checkpoint=str(last) if last is not None else None)
    if rank == 0:
        out = run_dir / "model"
        final = trainer.model.merge_and_unload() if hp.lora else trainer.model
        final.save_pretrained(out)
        processor.tokenizer.padding_side = "left"
        processor.save_pretrained(out)
        for name in ("processor_config.json", "tokenizer_config.json"):
            _copy_if_missing(Path(config["base"]) / name, out / name)
        peak_gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        progress.write("done", step=trainer.state.global_step, peak_gpu_mb=peak_gpu, peak_rss_mb=peak_rss)


def last_complete_checkpoint(folder: Path) -> Path | None:
    """The highest-step checkpoint whose save finished; half-written ones (a process stopped mid-save) are removed.

    The trainer writes `trainer_state.json` last, so its presence marks a complete checkpoint.
    """
    complete: list[tuple[int, Path]] = []
    for path in folder.glob("checkpoint-*"):
        step = path.name.removeprefix("checkpoint-")
        if not path.is_dir() or not step.isdigit():
            continue
        if (path / "trainer_state.json").is_file():
            complete.append((int(step), path))
        else:
            shutil.rmtree(path, ignore_errors=True)
    return max(complete)[1] if complete else None


def _copy_if_missing(source: Path, target: Path) -> None:
    if source.is_file() and not target.is_file():
        target.write_bytes(source.read_bytes())


def _is_oom(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}".lower()
    return "outofmemory" in text.replace(" ", "") or "out of memory" in text


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m qta.runner RUN_DIR", file=sys.stderr)
        return 2
    run_dir = Path(argv[1]).resolve()
    _watch_driver()
    try:
        train(run_dir)
    except BaseException as exc:  # report everything, KeyboardInterrupt included, then exit non-zero
        (run_dir / "error.json").write_text(
            json.dumps(
                {
                    "type": type(exc).__name__,
                    "message": str(exc),
                    "oom": _is_oom(exc),
                    "traceback": traceback.format_exc(),
                }
            )  # fmt: skip
        )
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
