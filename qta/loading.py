"""Loading a guard (or juror) model and its processor, from a local directory or a hub id.

Nothing here downloads when `HF_HUB_OFFLINE` is set: hub ids then resolve only from the local cache. The loader is the
same for a 3B production checkpoint and for the tiny checkpoints the tests build offline (`build_tiny_guard`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The processor classes live in transformers; importing them lazily keeps Django start-up free of torch.

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model")
IMAGE_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
QWEN_VL_TYPES = ("qwen2_5_vl", "qwen2_vl")


class CheckpointError(Exception):
    """A checkpoint that cannot be loaded; the message names the path and what is missing or wrong."""


@dataclass(frozen=True)
class Placement:
    device: str
    dtype: Any  # torch.dtype

    @property
    def label(self) -> str:
        return f"{self.device}/{str(self.dtype).removeprefix('torch.')}"


def choose_placement(device: str | None = None, dtype: str | None = None) -> Placement:
    """bf16 on a GPU that supports it (else fp16), float32 on CPU; either can be overridden ("cpu", "bfloat16", …)."""
    import torch

    if not device or device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if not dtype or dtype == "auto":
        if device.startswith("cuda"):
            chosen = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            chosen = torch.float32
    else:
        named = getattr(torch, dtype, None)
        if not isinstance(named, torch.dtype):
            raise CheckpointError(f"unknown dtype {dtype!r}: use auto, float32, bfloat16 or float16")
        chosen = named
    return Placement(device=device, dtype=chosen)


def is_local(source: str | os.PathLike) -> bool:
    text = str(source)
    return Path(text).expanduser().exists() or text.startswith(("/", "./", "../", "~"))


def check_checkpoint_dir(path: Path) -> dict:
    """Fail early, naming the missing file, instead of a deep transformers traceback. Returns config.json."""
    if not path.is_dir():
        raise CheckpointError(f"{path}: checkpoint directory does not exist")
    config_path = path / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{path}: missing config.json")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{config_path}: not readable JSON ({exc})") from exc
    for kind, names in (
        ("weights", WEIGHT_FILES),
        ("tokenizer", TOKENIZER_FILES),
        ("image processor", IMAGE_PROCESSOR_FILES),
    ):
        if not any((path / name).is_file() for name in names):
            raise CheckpointError(f"{path}: missing {kind} file (expected one of {', '.join(names)})")
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = set(json.loads(index.read_text()).get("weight_map", {}).values())
        for shard in sorted(shards):
            if not (path / shard).is_file():
                raise CheckpointError(f"{path}: missing weight shard {shard} (listed in {index.name})")
    return config


def _pretrained_kwargs(source: str) -> dict:
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
    return {"local_files_only": True} if offline or is_local(source) else {}


def _source(source: str | os.PathLike) -> tuple[str, str | None]:
    """(what to hand to from_pretrained, the model_type when it can be read without loading)."""
    text = str(source)
    if is_local(text):
        path = Path(text).expanduser().resolve()
        config = check_checkpoint_dir(path)
        return str(path), config.get("model_type")
    return text, None


def image_only_processor_class() -> type:
    """The Qwen2.5-VL processor without its video part, for machines without torchvision.

    transformers' stock processor insists on a torchvision video processor; the guard only ever sees images, and the
    PIL image processor gives the same pixel values, so this class drops `video_processor` from the attributes.
    """
    from transformers import Qwen2_5_VLProcessor

    class ImageOnlyQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            self.video_processor = None  # read by the parent's token bookkeeping, never used
            super(Qwen2_5_VLProcessor, self).__init__(image_processor, tokenizer, chat_template=chat_template)
            self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
            self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
            self.image_token_id = getattr(
                tokenizer, "image_token_id", None
            ) or tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = getattr(
                tokenizer, "video_token_id", None
            ) or tokenizer.convert_tokens_to_ids(self.video_token)

    return ImageOnlyQwen2_5_VLProcessor


def load_processor(
    source: str | os.PathLike, *, max_pixels: int | None = None, min_pixels: int | None = None
):
    from transformers import AutoProcessor
    from transformers.utils import is_torchvision_available

    name, model_type = _source(source)
    kwargs = _pretrained_kwargs(name)
    try:
        if model_type in QWEN_VL_TYPES and not is_torchvision_available():
            image_only: Any = image_only_processor_class()
            processor = image_only.from_pretrained(name, **kwargs)
        else:
            processor = AutoProcessor.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{name}: cannot load the processor ({exc})") from exc
    if max_pixels or min_pixels:
        size = dict(processor.image_processor.size)
        if max_pixels:
            size["longest_edge"] = max_pixels
        if min_pixels:
            size["shortest_edge"] = min_pixels
        processor.image_processor.size = size
    processor.tokenizer.padding_side = "left"  # generation appends on the right
    # The token budget (qta/budget.py) measures whole inputs before cutting them to the checkpoint's limit;
    # the tokenizer's own length warning would only repeat that, wrongly, for every long trace.
    processor.tokenizer.model_max_length = int(1e30)
    return processor


def load_model(source: str | os.PathLike, placement: Placement):
    from transformers import AutoModelForImageTextToText

    name, _ = _source(source)
    try:
        model = AutoModelForImageTextToText.from_pretrained(
            name, dtype=placement.dtype, **_pretrained_kwargs(name)
        )
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{name}: cannot load the model ({exc})") from exc
    model.to(placement.device)  # type: ignore[arg-type]
    model.eval()
    return model
