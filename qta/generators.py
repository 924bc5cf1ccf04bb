"""Reasoning models that answer a variant (its text and image) with a reasoning trace and a final answer.

The trace is taken from the response's separate reasoning field when the server gives one (vLLM's reasoning parsers
put it in `reasoning_content`, newer versions in `reasoning`), else from `<think>…</think>` in the content (an opening
tag the chat template already wrote may be missing: everything before `</think>` is then the reasoning). A reply with
no separable reasoning is kept, its whole text as the answer, and flagged.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from qta.endpoint import ChatEndpoint, EndpointError, RetryPolicy, wait
from qta.engine import image_data_url

_THINK = re.compile(r"^\s*(?:<think>)?(.*?)</think>(.*)$", re.DOTALL)


@dataclass
class Trace:
    status: str  # "ok", "flagged" (kept; no separable reasoning) or "failed"
    thinking: str = ""
    answer: str = ""
    source: str = ""  # where the reasoning came from: "field", "think_tags" or "none"
    usage: dict[str, Any] = field(default_factory=dict)
    finish_reason: str = ""
    error: str = ""
    attempts: int = 0
    attempt_log: list[dict] = field(default_factory=list)
    latency_ms: float = 0.0


def split_reasoning(message: dict[str, Any]) -> tuple[str, str, str]:
    """(thinking, answer, source) from a chat completion's message."""
    content = message.get("content") or ""
    if isinstance(content, list):  # content parts
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    for key in ("reasoning_content", "reasoning"):
        reasoning = message.get(key)
        if isinstance(reasoning, str) and reasoning.strip():
            return reasoning.strip(), content.strip(), "field"
    match = _THINK.match(content)
    if match and match.group(1).strip():
        return match.group(1).strip(), match.group(2).strip(), "think_tags"
    return "", content.strip(), "none"


def trace_from_message(message: dict[str, Any], **fields: Any) -> Trace:
    """The trace a reply gives: ok, flagged when its reasoning cannot be told apart, failed when it is empty."""
    thinking, answer, source = split_reasoning(message)
    if not answer and not thinking:
        return Trace(status="failed", error="the reply is empty", **fields)
    return Trace(status="ok" if source != "none" else "flagged", thinking=thinking, answer=answer, source=source,
                 **fields)  # fmt: skip


def user_messages(text: str, image: bytes | None) -> list[dict]:
    content: list[dict] = (
        [{"type": "image_url", "image_url": {"url": image_data_url(image)}}] if image else []
    )
    content.append({"type": "text", "text": text})
    return [{"role": "user", "content": content}]


class OpenAIGenerator:
    """A reasoning model behind an OpenAI-compatible server (vLLM, SGLang, a hosted API); its calls are coroutines
    on the process's event loop (`qta.endpoint`), up to `max_concurrency` in flight."""

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, timeout_s: float = 600.0,
                 max_tokens: int = 4096, temperature: float = 0.7, retry: RetryPolicy | None = None,
                 name: str = "", max_concurrency: int = 8):  # fmt: skip
        self.model, self.name = model, name or model
        self.max_tokens, self.temperature = max_tokens, temperature
        self.retry = retry or RetryPolicy()
        self.endpoint = ChatEndpoint(
            base_url, api_key=api_key, timeout_s=timeout_s, max_connections=max_concurrency
        )

    def generate(self, text: str, image: bytes | None) -> Trace:
        return wait(self.agenerate(text, image))

    async def agenerate(self, text: str, image: bytes | None) -> Trace:
        body = {"model": self.model, "messages": user_messages(text, image), "max_tokens": self.max_tokens,
                "temperature": self.temperature}  # fmt: skip
        attempts: list[dict] = []
        started = time.perf_counter()
        try:
            response = await self.endpoint.chat(body, self.retry, attempts, self.name)
            choice = response["choices"][0]
            message = choice["message"]
        except (EndpointError, LookupError, TypeError) as exc:
            return Trace(status="failed", error=f"{type(exc).__name__}: {exc}", attempts=len(attempts),
                         attempt_log=attempts, latency_ms=(time.perf_counter() - started) * 1000)  # fmt: skip
        usage = {k: v for k, v in (response.get("usage") or {}).items() if isinstance(v, int | float | dict)}
        return trace_from_message(
            message, usage=usage, finish_reason=choice.get("finish_reason") or "", attempts=len(attempts),
            attempt_log=attempts if len(attempts) > 1 else [], latency_ms=(time.perf_counter() - started) * 1000,
        )  # fmt: skip


class TransformersGenerator:
    """A local reasoning model (transformers), one reply at a time in this process."""

    def __init__(
        self, path: str, *, max_tokens: int = 1024, temperature: float = 0.7, seed: int = 0, name: str = ""
    ):
        from qta.loading import choose_placement, load_model, load_processor

        self.name = name or path
        self.placement = choose_placement()
        self.processor = load_processor(path)
        self.model = load_model(path, self.placement).eval()
        self.max_tokens, self.temperature, self.seed = max_tokens, temperature, seed
        self._lock = threading.Lock()

    def generate(self, text: str, image: bytes | None) -> Trace:
        import torch

        from qta.engine import decode_image

        started = time.perf_counter()
        content: list[dict] = [{"type": "image"}] if image else []
        content.append({"type": "text", "text": text})
        try:
            prompt = self.processor.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                                        add_generation_prompt=True)  # fmt: skip
            images = [decode_image(image)] if image else None
            inputs = self.processor(text=[prompt], images=images, return_tensors="pt").to(
                self.placement.device
            )
            sampling = (
                {"do_sample": True, "temperature": self.temperature}
                if self.temperature > 0
                else {"do_sample": False}
            )
            with self._lock, torch.inference_mode():
                torch.manual_seed(self.seed)
                out = self.model.generate(**inputs, max_new_tokens=self.max_tokens, **sampling)
        except Exception as exc:
            return Trace(status="failed", error=f"{type(exc).__name__}: {exc}", attempts=1,
                         latency_ms=(time.perf_counter() - started) * 1000)  # fmt: skip
        new = out[0, inputs["input_ids"].shape[1] :]
        reply = self.processor.tokenizer.decode(new, skip_special_tokens=True)
        usage = {"prompt_tokens": int(inputs["input_ids"].shape[1]), "completion_tokens": int(new.numel())}
        return trace_from_message({"content": reply}, usage=usage, attempts=1, latency_ms=(time.perf_counter() - started) * 1000,
                               finish_reason="length" if new.numel() >= self.max_tokens else "stop")  # fmt: skip
