"""Guard backends: batched local inference with transformers, and a model served behind an OpenAI-compatible API.

Both take `AuditInput`s and return one `Verdict` per input, in order, and never raise for one bad sample: an image
that does not decode or a call that keeps failing becomes a *failed* verdict with its reason, the rest of the batch
goes on. Outputs are read with the protocol's parser, so an unreadable output is *invalid*, never a guess.
"""

from __future__ import annotations

import base64
import io
import logging
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from guardmodel import protocol

log = logging.getLogger(__name__)

Status = Literal["valid", "invalid", "failed"]
TRUNCATION_MARK = "\n[… {n} tokens of reasoning removed …]\n"


@dataclass(frozen=True)
class AuditInput:
    question: str
    thinking: str
    answer: str
    image: bytes | None = None  # encoded image file (PNG, JPEG, …)


@dataclass
class Verdict:
    status: Status
    judgment: float | None = None
    analysis: str = ""
    raw_output: str = ""
    error: str = ""
    latency_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    truncated_tokens: int = 0  # reasoning tokens removed from the middle to fit the context
    attempts: int = 1

    @classmethod
    def from_output(cls, text: str, *, variant: protocol.Variant = "qta", **extra: Any) -> Verdict:
        parsed = protocol.parse_output(text, variant=variant)
        return cls(
            status="valid" if parsed.valid else "invalid",
            judgment=parsed.judgment,
            analysis=parsed.analysis,
            raw_output=text,
            error=parsed.reason,
            **extra,
        )

    def meta(self) -> dict:
        """What a stored label keeps besides its judgment: usage, truncation, attempts."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "truncated_tokens": self.truncated_tokens,
            "attempts": self.attempts,
        }


class Guard(Protocol):
    name: str

    def judge(self, items: Sequence[AuditInput]) -> list[Verdict]: ...


class ImageError(ValueError):
    pass


def decode_image(data: bytes, *, max_pixels: int | None = None):
    """Decode to RGB; refuse what Pillow cannot read and images beyond the pixel limit (decompression bombs)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
            if max_pixels and width * height > max_pixels:
                raise ImageError(f"image is {width}x{height} pixels, over the limit of {max_pixels}")
            image = probe.convert("RGB")
    except ImageError:
        raise
    except Exception as exc:  # Pillow raises many types for broken files
        raise ImageError(f"image could not be decoded ({type(exc).__name__}: {exc})") from exc
    return image


def is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


@dataclass
class EngineOptions:
    max_new_tokens: int = 256
    batch_size: int = 8
    max_input_tokens: int | None = None  # default: the model's context minus max_new_tokens
    max_pixels: int | None = None  # image processor resize limit (Qwen: longest_edge in pixels)
    min_pixels: int | None = None
    max_image_pixels: int = 50_000_000  # refuse to decode beyond this
    device: str | None = None
    dtype: str | None = None
    variant: protocol.Variant = "qta"


@dataclass
class _Prepared:
    index: int
    text: str
    image: Any  # PIL image or None
    prompt_tokens: int
    truncated: int


class TransformersGuard:
    """Batched greedy generation on a local checkpoint: left padding, mixed image/no-image batches, length-sorted
    batches (less padding), reasoning truncated from the middle when a prompt would overflow the context (the image
    tokens are never cut), and a batch that runs out of memory is halved and retried."""

    def __init__(self, source: str | Path, options: EngineOptions | None = None, *, name: str = ""):
        from guardmodel.loading import choose_placement, load_model, load_processor

        self.options = options or EngineOptions()
        self.source = str(source)
        self.name = name or Path(self.source).name
        self.placement = choose_placement(self.options.device, self.options.dtype)
        self.processor = load_processor(
            source, max_pixels=self.options.max_pixels, min_pixels=self.options.min_pixels
        )
        self.model = load_model(source, self.placement)
        self.tokenizer = self.processor.tokenizer
        context = getattr(self.model.config.get_text_config(), "max_position_embeddings", None) or 32768
        self.max_input_tokens = self.options.max_input_tokens or max(
            64, context - self.options.max_new_tokens
        )
        self.batch_size = self.options.batch_size
        self.oom_halvings = 0

    # -- prompt building ---------------------------------------------------------------------------------------
    def _render(self, item: AuditInput, thinking: str, has_image: bool) -> str:
        messages = protocol.build_messages(
            question=item.question, thinking=thinking, answer=item.answer, has_image=has_image,
            variant=self.options.variant,
        )  # fmt: skip
        return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _count(self, text: str, image: Any) -> int:
        """Prompt length in tokens. Qwen-style processors say how many tokens an image expands to, so the text is
        only tokenized (the pixels are processed once, in the batch); other processors are run in full."""
        if image is None or not hasattr(self.processor, "_get_num_multimodal_tokens"):
            encoded = self.processor(text=[text], images=[image] if image is not None else None)
            return len(encoded["input_ids"][0])
        placeholders = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        expanded = self.processor._get_num_multimodal_tokens(image_sizes=[(image.height, image.width)])
        return placeholders - 1 + expanded["num_image_tokens"][0]  # the one placeholder becomes that many

    def _prepare(self, index: int, item: AuditInput) -> _Prepared:
        image = None
        if item.image is not None:
            image = decode_image(item.image, max_pixels=self.options.max_image_pixels)
        text = self._render(item, item.thinking, image is not None)
        length = self._count(text, image)
        truncated = 0
        if length > self.max_input_tokens:
            ids = self.tokenizer(item.thinking, add_special_tokens=False)["input_ids"]
            overflow = length - self.max_input_tokens
            # Cut a little more than the overflow: the marker costs tokens and re-tokenizing shifts boundaries.
            cut = min(len(ids), overflow + 16)
            while True:
                keep_head = (len(ids) - cut) // 2
                keep_tail = len(ids) - cut - keep_head
                thinking = (
                    self.tokenizer.decode(ids[:keep_head])
                    + TRUNCATION_MARK.format(n=cut)
                    + (self.tokenizer.decode(ids[len(ids) - keep_tail :]) if keep_tail else "")
                )
                text = self._render(item, thinking, image is not None)
                length = self._count(text, image)
                if length <= self.max_input_tokens or cut >= len(ids):
                    break
                cut = min(len(ids), cut + (length - self.max_input_tokens) + 16)
            truncated = cut
            if length > self.max_input_tokens:
                raise ValueError(
                    f"prompt needs {length} tokens without any reasoning; the limit is {self.max_input_tokens}"
                )
        return _Prepared(index, text, image, length, truncated)

    # -- generation --------------------------------------------------------------------------------------------
    def _generate(self, batch: list[_Prepared]) -> list[tuple[str, int]]:
        import torch

        images = [p.image for p in batch if p.image is not None]
        inputs = self.processor(
            text=[p.text for p in batch], images=images or None, padding=True, return_tensors="pt"
        ).to(self.placement.device)
        with torch.inference_mode():
            output = self.model.generate(
                **inputs,
                max_new_tokens=self.options.max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        new = output[:, inputs["input_ids"].shape[1] :]
        results = []
        for row in new:
            keep = row[row != self.tokenizer.pad_token_id]
            results.append((self.tokenizer.decode(keep, skip_special_tokens=True), int(keep.numel())))
        return results

    def _run(self, batch: list[_Prepared]) -> list[tuple[str, int]]:
        """Generate, halving the batch on out-of-memory until a single sample fails."""
        try:
            return self._generate(batch)
        except Exception as exc:
            if not is_oom(exc) or len(batch) == 1:
                raise
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            self.oom_halvings += 1
            self.batch_size = max(1, len(batch) // 2)
            log.warning(
                "out of memory on a batch of %d; going on with batches of %d", len(batch), self.batch_size
            )
            half = len(batch) // 2
            return self._run(batch[:half]) + self._run(batch[half:])

    def judge(
        self, items: Sequence[AuditInput], progress: Callable[[int], None] | None = None
    ) -> list[Verdict]:
        verdicts: list[Verdict | None] = [None] * len(items)
        prepared: list[_Prepared] = []
        for index, item in enumerate(items):
            try:
                prepared.append(self._prepare(index, item))
            except ValueError as exc:  # ImageError is a ValueError
                verdicts[index] = Verdict(status="failed", error=str(exc), attempts=0)
        prepared.sort(key=lambda p: p.prompt_tokens)  # similar lengths together: less padding
        start = 0
        while start < len(prepared):
            batch = prepared[start : start + self.batch_size]
            started = time.perf_counter()
            try:
                outputs = self._run(batch)
            except Exception as exc:
                log.exception("guard batch failed")
                for p in batch:
                    verdicts[p.index] = Verdict(status="failed", error=f"{type(exc).__name__}: {exc}")
            else:
                per_item = (time.perf_counter() - started) * 1000 / len(batch)
                for p, (text, generated) in zip(batch, outputs, strict=True):
                    verdicts[p.index] = Verdict.from_output(
                        text, variant=self.options.variant, latency_ms=per_item, prompt_tokens=p.prompt_tokens,
                        completion_tokens=generated, truncated_tokens=p.truncated,
                    )  # fmt: skip
            start += len(batch)
            if progress:
                progress(len(batch))
        return [v for v in verdicts if v is not None]


# -- OpenAI-compatible endpoints ----------------------------------------------------------------------------------


def image_data_url(data: bytes) -> str:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as probe:
        mime = Image.MIME.get(probe.format or "", "image/png")
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def openai_messages(item: AuditInput, variant: protocol.Variant = "qta") -> list[dict]:
    """The protocol's messages in the OpenAI chat format, the image as a base64 data URL."""
    messages = protocol.build_messages(
        question=item.question, thinking=item.thinking, answer=item.answer, has_image=item.image is not None,
        variant=variant,
    )  # fmt: skip
    converted = []
    for message in messages:
        parts = []
        for part in message["content"]:
            if part["type"] == "image":
                assert item.image is not None
                parts.append({"type": "image_url", "image_url": {"url": image_data_url(item.image)}})
            else:
                parts.append(part)
        converted.append({"role": message["role"], "content": parts})
    return converted


RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


@dataclass
class RetryPolicy:
    attempts: int = 4
    base_delay_s: float = 0.5
    max_delay_s: float = 20.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def delay(self, attempt: int) -> float:
        """Exponential backoff with full jitter."""
        return random.uniform(0, min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1)))


def is_retryable(exc: BaseException) -> bool:
    import openai

    if isinstance(exc, openai.APIConnectionError | openai.APITimeoutError):
        return True
    return isinstance(exc, openai.APIStatusError) and exc.status_code in RETRYABLE_STATUS


class OpenAIGuard:
    """A guard served by vLLM, SGLang or any OpenAI-compatible server; many requests in flight from a thread pool."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        name: str = "",
        api_key: str | None = None,
        timeout_s: float = 120.0,
        max_concurrency: int = 8,
        max_tokens: int = 512,
        retry: RetryPolicy | None = None,
        variant: protocol.Variant = "qta",
    ):
        import openai

        self.name = name or model
        self.model = model
        self.max_tokens = max_tokens
        self.max_concurrency = max(1, max_concurrency)
        self.retry = retry or RetryPolicy()
        self.variant: protocol.Variant = variant
        # The client's own retries are off: ours log each attempt and end in a failed verdict, not an exception.
        self.client = openai.OpenAI(
            base_url=base_url, api_key=api_key or "unused", timeout=timeout_s, max_retries=0
        )

    def _call(self, item: AuditInput) -> Verdict:
        try:
            messages = openai_messages(item, self.variant)
        except Exception as exc:
            return Verdict(status="failed", error=f"image could not be decoded ({exc})", attempts=0)
        started = time.perf_counter()
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self.client.chat.completions.create(
                    model=self.model,
                    messages=messages,  # type: ignore[arg-type]
                    temperature=0,
                    max_tokens=self.max_tokens,  # type: ignore[arg-type]
                )
            except Exception as exc:
                retry = is_retryable(exc) and attempt < self.retry.attempts
                log.warning(
                    "guard %s attempt %d failed: %s%s", self.name, attempt, exc, "; retrying" if retry else ""
                )
                if not retry:
                    return Verdict(
                        status="failed", error=f"{type(exc).__name__}: {exc}", attempts=attempt,
                        latency_ms=(time.perf_counter() - started) * 1000,
                    )  # fmt: skip
                self.retry.sleep(self.retry.delay(attempt))
                continue
            text = response.choices[0].message.content or "" if response.choices else ""
            usage = response.usage
            return Verdict.from_output(
                text, variant=self.variant, attempts=attempt, latency_ms=(time.perf_counter() - started) * 1000,
                prompt_tokens=usage.prompt_tokens if usage else 0,
                completion_tokens=usage.completion_tokens if usage else 0,
            )  # fmt: skip

    def judge(
        self, items: Sequence[AuditInput], progress: Callable[[int], None] | None = None
    ) -> list[Verdict]:
        def one(item: AuditInput) -> Verdict:
            verdict = self._call(item)
            if progress:
                progress(1)
            return verdict

        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            return list(pool.map(one, items))
