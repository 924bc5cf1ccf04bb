"""Tiny randomly-initialised Qwen2.5-VL checkpoints, built offline.

Nothing can be downloaded on these machines, so tests and the demo build their own checkpoint: a byte-level BPE
tokenizer trained with `tokenizers` on the protocol's own wording (plus any texts given), the Qwen2.5-VL chat
template with its vision tokens, the PIL image processor, and a two-layer model with hidden size 64. It is saved with
`save_pretrained` and read back by `qta.loading` exactly like a real checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from qta import protocol

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# The Qwen2.5-VL chat template (an image part becomes the vision tokens the processor expands).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class TinySpec:
    """Sizes of the tiny model; the defaults give ~0.2M parameters and a few seconds per training epoch on 2 cores."""

    vocab_size: int = 1024
    hidden_size: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    intermediate_size: int = 128
    max_position_embeddings: int = 4096
    vision_depth: int = 2
    vision_hidden: int = 32
    min_pixels: int = 56 * 56
    max_pixels: int = 224 * 224
    seed: int = 0
    initializer_range: float = 0.02  # larger values make an untrained model's output depend more on its input


def base_corpus() -> list[str]:
    """The protocol's own words, so prompts and targets tokenize into few tokens."""
    texts = [protocol.system_prompt("qta"), protocol.system_prompt("qa"), protocol.FORMAT_REMINDER]
    texts.append(
        protocol.user_text(question="What is shown?", thinking="Let me think.", answer="It is a cat.")
    )
    for judgment in protocol.JUDGMENTS:
        texts.append(
            protocol.format_target(
                analysis="The reasoning is safe and refuses the request.", judgment=judgment
            )
        )
    texts.extend(label for _, label in protocol.RISK_CATEGORIES)
    texts.append(
        "The image shows a scene. Step 1. Step 2. Step 3. First, then, finally. I cannot help with that."
    )
    return texts


def train_tokenizer(texts: Iterable[str], vocab_size: int, model_max_length: int = 4096):
    """A byte-level BPE with Qwen2's pre-tokenizer, wrapped as the Qwen2 tokenizer transformers expects."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator(list(texts), trainer=trainer)
    vocab = raw.get_vocab()
    merges = _merges(raw)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,  # type: ignore[arg-type]
        unk_token=None,  # type: ignore[arg-type]
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.model_max_length = model_max_length
    return tokenizer


def _merges(raw) -> list[tuple[str, ...]]:
    model = json.loads(raw.to_str())["model"]
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]


def build_tiny_guard(out_dir: Path, *, texts: Iterable[str] = (), spec: TinySpec | None = None) -> Path:
    """Build, save and return the directory of a tiny random Qwen2.5-VL guard."""
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from qta.loading import image_only_processor_class

    spec = spec or TinySpec()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer([*base_corpus(), *texts], spec.vocab_size, spec.max_position_embeddings)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    head_dim = spec.hidden_size // spec.heads
    half = head_dim // 2
    mrope = [half - 2 * (half // 3), half // 3, half // 3]  # temporal, height, width; sums to head_dim / 2
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": spec.hidden_size,
            "intermediate_size": spec.intermediate_size,
            "num_hidden_layers": spec.layers,
            "num_attention_heads": spec.heads,
            "num_key_value_heads": spec.kv_heads,
            "max_position_embeddings": spec.max_position_embeddings,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope},
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": spec.vision_depth,
            "hidden_size": spec.vision_hidden,
            "intermediate_size": spec.vision_hidden * 2,
            "num_heads": 2,
            "out_hidden_size": spec.hidden_size,
            "fullatt_block_indexes": [spec.vision_depth - 1],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
        initializer_range=spec.initializer_range,  # type: ignore[call-arg]
    )
    for sub_config in (config.text_config, config.vision_config):
        sub_config.initializer_range = spec.initializer_range  # type: ignore[union-attr]
    torch.manual_seed(spec.seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"], do_sample=False
    )
    model.save_pretrained(out_dir)
    image_processor = Qwen2VLImageProcessorPil(min_pixels=spec.min_pixels, max_pixels=spec.max_pixels)
    processor = image_only_processor_class()(image_processor=image_processor, tokenizer=tokenizer,
                                             chat_template=CHAT_TEMPLATE)  # fmt: skip
    processor.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    # Name the stock class, so a machine with torchvision loads this checkpoint through AutoProcessor as usual.
    for name in ("processor_config.json", "tokenizer_config.json"):
        path = out_dir / name
        data = json.loads(path.read_text())
        data["processor_class"] = "Qwen2_5_VLProcessor"
        path.write_text(json.dumps(data, indent=2) + "\n")
    return out_dir
