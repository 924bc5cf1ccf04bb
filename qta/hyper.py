"""Hyperparameters of a training round: defaults with the reason for each (no Django here: the child process reads
them too). `for_stage` gives the defaults for a 3B base; `TINY` overrides them for the tiny offline checkpoints."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any


def _h(default: Any, reason: str) -> Any:
    return field(default=default, metadata={"reason": reason})


class HyperparameterError(ValueError):
    pass


# The GuardTrace-VL release cuts its inputs at 8,192 tokens; a round trains within the budget it is judged with.
DEFAULT_MAX_LENGTH = 8192
MIN_MAX_LENGTH = 64
# Past any model's context: a larger budget would be no budget, and one long trace would blow memory again.
MAX_MAX_LENGTH = 1_000_000


@dataclass
class Hyperparameters:
    learning_rate: float = _h(
        1e-5, "full fine-tuning of a 3B VLM: higher rates forget the base model's language"
    )
    epochs: float = _h(
        3.0,
        "a few passes over the training set (SFT: the consensus samples; DPO: the pairs); more overfits the "
        "jurors' wording",
    )
    batch_size: int = _h(4, "per device; a 3B VLM with images fits 4 QTA samples of ~2k tokens in 80 GB")
    gradient_accumulation: int = _h(
        8,
        "batches whose gradients add up before each update: the effective batch (batch_size × this × GPUs) keeps "
        "the updates steady at a small per-device batch",
    )
    lora: bool = _h(False, "full fine-tuning learns the protocol best; LoRA when memory is short")
    lora_r: int = _h(16, "LoRA rank: enough for a classification-like output")
    lora_alpha: int = _h(
        32, "LoRA scale: the update is weighted by alpha / rank; twice the rank is the usual choice"
    )
    freeze_vision: bool = _h(
        True, "the vision tower already sees well; freezing it saves memory and keeps it stable"
    )
    beta: float = _h(0.1, "DPO: how far the policy may move from the reference (TRL's default)")
    sft_weight: float = _h(
        0.0, "DPO stages: weight of an SFT term on the chosen answer (RPO); 0 is plain DPO, as in the paper"
    )
    warmup_ratio: float = _h(0.05, "a short warm-up avoids a large first step from a fresh optimiser")
    weight_decay: float = _h(0.0, "the data are small; decay adds little")
    max_pixels: int = _h(1003520, "longest image side budget (1280 × 28 × 28): as Qwen2.5-VL is served")
    save_steps: int = _h(200, "a checkpoint to resume from every this many optimiser steps")
    logging_steps: int = _h(5, "how often progress and the curves update")
    seed: int = _h(42, "reproducible shuffling and initialisation")
    gradient_checkpointing: bool = _h(True, "trades compute for memory on a real model; off for tiny ones")
    max_length: int = _h(
        DEFAULT_MAX_LENGTH,
        "token budget of one record (prompt with its image tokens, plus the longer completion): longer records keep "
        "the image, question and answer and lose the middle of their reasoning; default the base checkpoint's "
        "max_input_tokens, else 8192 as the GuardTrace-VL release",
    )
    prompt_variant: str = _h(
        "qta", "qta (the base checkpoint's template) or qa (the QA-only ablation: the built-in QA template)"
    )
    withhold_image: bool = _h(False, "ablation: train and judge without the image")

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise HyperparameterError(f"{f.name}: {value} is not a finite number")
        if not 0 < self.learning_rate < 1:
            raise HyperparameterError(f"learning_rate: {self.learning_rate} is not in (0, 1)")
        if self.epochs <= 0:
            raise HyperparameterError(f"epochs: {self.epochs} must be positive")
        for name in (
            "batch_size",
            "gradient_accumulation",
            "lora_r",
            "lora_alpha",
            "save_steps",
            "logging_steps",
        ):
            if int(getattr(self, name)) < 1:
                raise HyperparameterError(f"{name}: {getattr(self, name)} must be at least 1")
        if self.beta <= 0:
            raise HyperparameterError(f"beta: {self.beta} must be positive")
        if self.sft_weight < 0:
            raise HyperparameterError(f"sft_weight: {self.sft_weight} must not be negative")
        if not 0 <= self.warmup_ratio < 1:
            raise HyperparameterError(f"warmup_ratio: {self.warmup_ratio} is not in [0, 1)")
        if not MIN_MAX_LENGTH <= self.max_length <= MAX_MAX_LENGTH:
            raise HyperparameterError(
                f"max_length: {self.max_length} is not between {MIN_MAX_LENGTH} and {MAX_MAX_LENGTH:,} tokens"
            )
        if self.prompt_variant not in ("qta", "qa"):
            raise HyperparameterError(f"prompt_variant: {self.prompt_variant!r} is not qta or qa")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Hyperparameters:
        known = {f.name: f for f in fields(cls)}
        if unknown := sorted(set(data) - set(known)):
            raise HyperparameterError(f"unknown hyperparameter(s): {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for name, value in data.items():
            kind = type(known[name].default)
            try:
                values[name] = _coerce(kind, value)
            except (TypeError, ValueError):
                raise HyperparameterError(f"{name}: {value!r} is not a {kind.__name__}") from None
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def reasons() -> dict[str, str]:
        return {f.name: f.metadata["reason"] for f in fields(Hyperparameters)}


def _coerce(kind: type, value: Any) -> Any:
    if kind is bool:
        if isinstance(value, str):
            if value.lower() not in {"true", "false", "1", "0", "yes", "no", "on", "off"}:
                raise ValueError(value)
            return value.lower() in {"true", "1", "yes", "on"}
        return bool(value)
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise ValueError(value)
    return kind(value)


# The DPO stages start from a tuned model: a far smaller step and one pass keep it close to where it was.
STAGE_DEFAULTS: dict[str, dict[str, Any]] = {
    "sft": {},
    "dpo": {"learning_rate": 5e-7, "epochs": 1.0},
    "ogdpo": {"learning_rate": 5e-7, "epochs": 1.0},
}

# The tiny checkpoints' synthetic records are 400-500 tokens with their image; 1,024 fits them whole and keeps a
# round with a far longer trace quick.
TINY_MAX_LENGTH = 1024

# The tiny offline checkpoints (hidden 64, two layers) learn the protocol in a few epochs at a much higher rate.
TINY: dict[str, dict[str, Any]] = {
    "sft": {"learning_rate": 3e-3, "epochs": 8.0, "batch_size": 8, "gradient_accumulation": 1,
            "gradient_checkpointing": False, "freeze_vision": False, "save_steps": 50, "max_pixels": 50176,
            "max_length": TINY_MAX_LENGTH},
    # On a three-way judgment plain DPO can lower the chosen answer with the rejected one and hand the mass to the
    # third level; the SFT term holds the chosen answer up (measured: the refined round kept F1 only with it).
    "dpo": {"learning_rate": 1e-4, "epochs": 1.0, "batch_size": 8, "gradient_accumulation": 1, "sft_weight": 1.0,
            "gradient_checkpointing": False, "freeze_vision": False, "save_steps": 50, "max_pixels": 50176,
            "max_length": TINY_MAX_LENGTH},
}  # fmt: skip
# The refinement set is small and sharp (a few dozen pairs): a gentler step keeps what DPO learned.
TINY["ogdpo"] = {**TINY["dpo"], "learning_rate": 3e-5}


def for_stage(
    stage: str, *, tiny: bool = False, max_input_tokens: int | None = None, **overrides: Any
) -> Hyperparameters:
    """The stage's defaults, the tiny preset's, the base checkpoint's input budget (`max_input_tokens`, when it
    has one) as `max_length`, then `overrides`, each over the one before."""
    checkpoint = {"max_length": max_input_tokens} if max_input_tokens else {}
    values = {**STAGE_DEFAULTS[stage], **(TINY[stage] if tiny else {}), **checkpoint, **overrides}
    return Hyperparameters.from_dict(values)
