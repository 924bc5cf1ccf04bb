"""The token budget: how an input too long for its budget is cut (no Django here: the training child uses it too).

One policy for inference and training. The image tokens, the question and the answer (in training, the target too)
stay whole; the reasoning loses its middle: its head and its tail are kept around a mark saying how many tokens
went, and the cut grows until the whole input fits. `fit_reasoning` is that policy; the guard engine measures a
prompt, the training rounds a prompt plus its completion.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

TRUNCATION_MARK = "\n[… {n} tokens of reasoning removed …]\n"
# Texts tokenized together when counting many (each token's record costs ~100 bytes while its batch lasts).
CHUNK_CHARS = 1_000_000
# Cut a little more than the overflow: the mark costs tokens and re-tokenizing shifts the boundaries.
_SLACK = 16


class BudgetError(ValueError):
    """The input does not fit even with all of its reasoning removed."""

    def __init__(self, tokens: int, limit: int):
        self.tokens, self.limit = tokens, limit
        super().__init__(f"prompt needs {tokens} tokens without any reasoning; the limit is {limit}")


@dataclass(frozen=True)
class Fitted:
    thinking: str  # the reasoning to use: the original one, or its head + mark + tail
    tokens: int  # the whole input's length with it, as `measure` counted
    removed: int = 0  # reasoning tokens removed (0: it fitted as it was)


def fit_reasoning(
    thinking: str,
    *,
    limit: int,
    measure: Callable[[str], int],
    tokenizer: Any,
    tokens: int | None = None,
) -> Fitted:
    """The reasoning cut from the middle until `measure(reasoning)` — the whole input's length in tokens with that
    reasoning in place — is at most `limit`. `tokens` is the length with the full reasoning when already known.
    Raises `BudgetError` when even an empty reasoning (just the mark) does not fit."""
    length = measure(thinking) if tokens is None else tokens
    if length <= limit:
        return Fitted(thinking, length)
    ids = _ids(tokenizer, thinking)
    if not ids:
        raise BudgetError(length, limit)
    cut = min(len(ids), length - limit + _SLACK)
    while True:
        keep_head = (len(ids) - cut) // 2
        keep_tail = len(ids) - cut - keep_head
        shortened = (
            tokenizer.decode(ids[:keep_head])
            + TRUNCATION_MARK.format(n=cut)
            + (tokenizer.decode(ids[len(ids) - keep_tail :]) if keep_tail else "")
        )
        length = measure(shortened)
        if length <= limit or cut >= len(ids):
            break
        cut = min(len(ids), cut + (length - limit) + _SLACK)
    if length > limit:
        raise BudgetError(length, limit)
    return Fitted(shortened, length, cut)


def _plain_backend(tokenizer: Any) -> Any:
    """The fast tokenizer's backend while it neither pads nor truncates (the transformers wrapper sets both per call
    and leaves the last call's behind), else None. It gives the same tokens without the character offsets the
    wrapper asks for: about twice as fast, and far less memory on a long text."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or backend.padding is not None or backend.truncation is not None:
        return None
    return backend if hasattr(backend, "encode_batch_fast") else None


def _ids(tokenizer: Any, text: str) -> list[int]:
    backend = _plain_backend(tokenizer)
    if backend is not None:
        return backend.encode_batch_fast([text], add_special_tokens=False)[0].ids
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def image_tokens(processor: Any, size: tuple[int, int]) -> int:
    """How many tokens one image of `size` (height, width) expands to, from the processor's resize rules (Qwen-style
    processors say so without the pixels; others are run on a blank image of that size)."""
    if hasattr(processor, "_get_num_multimodal_tokens"):
        return processor._get_num_multimodal_tokens(image_sizes=[size])["num_image_tokens"][0]
    from PIL import Image

    token = getattr(processor, "image_token", "<image>")
    blank = Image.new("RGB", (size[1], size[0]))
    expanded = len(processor(text=[token], images=[blank])["input_ids"][0])
    return expanded - len(processor.tokenizer(token)["input_ids"]) + 1


def _chunks(texts: Sequence[str], chars: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    size = 0
    for text in texts:
        chunk.append(text)
        size += len(text)
        if size >= chars:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def text_tokens(tokenizer: Any, texts: Sequence[str]) -> list[int]:
    """Token counts of many texts, a batch at a time (a fast tokenizer spreads a batch over the cores); only the
    counts are kept, so memory stays that of one batch of ~CHUNK_CHARS characters however many texts there are."""
    backend = _plain_backend(tokenizer)
    counts: list[int] = []
    for chunk in _chunks(texts, CHUNK_CHARS):
        if backend is not None:
            counts.extend(
                len(encoding) for encoding in backend.encode_batch_fast(chunk, add_special_tokens=False)
            )
        else:
            counts.extend(len(ids) for ids in tokenizer(chunk, add_special_tokens=False)["input_ids"])
    return counts


def prompt_tokens(
    processor: Any, texts: Sequence[str], image_sizes: Sequence[tuple[int, int] | None]
) -> list[int]:
    """Lengths of rendered prompts as the processor feeds them to the model: each text's tokens, its one image
    placeholder expanded to the image's tokens."""
    counts = text_tokens(processor.tokenizer, texts)
    return [
        count if size is None else count - 1 + image_tokens(processor, size)
        for count, size in zip(counts, image_sizes, strict=True)
    ]
