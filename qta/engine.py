"""Guard backends: batched local inference with transformers, and a model served behind an OpenAI-compatible API.

Both take `AuditInput`s and return one `Verdict` per input, in order, and never raise for one bad sample: an image
that does not decode or a call that keeps failing becomes a *failed* verdict with its reason, the rest of the batch
goes on. Outputs are read with the protocol's parser, so an unreadable output is *invalid*, never a guess.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from qta import protocol
from qta.endpoint import EndpointError, ReplicaPool, RetryPolicy, wait
from qta.scores import TOP_LOGPROBS, judgment_slot, served_scores, top_logprobs

log = logging.getLogger(__name__)

Status = Literal["valid", "invalid", "failed"]


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
    # One entry per call made for this sample: {"attempt", "outcome", "ms"}; outcome is "ok", "invalid output"
    # (re-asked with the format reminder) or the error.
    attempt_log: list[dict] = field(default_factory=list)
    first_output: str = ""  # the unreadable reply that led to a re-ask
    reasked: bool = False
    # The guard's own probabilities of each judgment level at its judgment slot (qta/scores.py), when it gives them.
    scores: dict | None = None
    # P(harmful) per segment and per reasoning step, and the first unsafe step (TransformersGuard.prefix_risk).
    located: dict | None = None

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
            **({"attempt_log": self.attempt_log} if self.attempt_log else {}),
            **({"first_output": self.first_output} if self.reasked else {}),
            **({"scores": self.scores} if self.scores is not None else {}),
            **({"located": self.located} if self.located is not None else {}),
        }


JUDGMENT_CUE = "Judgment: "  # where the guard is asked for its judgment straight away
# How a prefix is read: after the guard's own analysis of it, or straight away at the judgment cue.
Reading = Literal["analysis", "cue"]
READINGS: tuple[Reading, ...] = ("analysis", "cue")


def prefix_items(item: AuditInput) -> list[AuditInput]:
    """The sample as the guard reads it piece by piece: the question (and image) alone; each growing prefix of the
    reasoning (its steps as the app splits them); the whole reasoning with the answer."""
    steps = protocol.reasoning_steps(item.thinking)
    return [
        AuditInput(item.question, "", "", item.image),
        *(AuditInput(item.question, "\n\n".join(steps[: k + 1]), "", item.image) for k in range(len(steps))),
        AuditInput(item.question, item.thinking, item.answer, item.image),
    ]


def located(harmful: list[float], threshold: float) -> dict:
    """P(harmful) after each of `prefix_items` as the audit answers it: per segment (the question alone, the
    reasoning, the answer), per reasoning step, and the first step whose prefix reaches `threshold` (the predicted
    first unsafe step)."""
    by_step = harmful[1:-1]
    return {
        "segments": {
            "question": round(harmful[0], 6),
            "reasoning": round(by_step[-1] if by_step else harmful[0], 6),
            "answer": round(harmful[-1], 6),
        },
        "steps": [round(p, 6) for p in by_step],
        "threshold": threshold,
        "first_unsafe_step": next((k + 1 for k, p in enumerate(by_step) if p >= threshold), None),
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
    except Image.UnidentifiedImageError as exc:
        # Pillow's message names its in-memory file object (`<_io.BytesIO object at 0x…>`): say it plainly.
        raise ImageError(
            "image could not be decoded: not a format Pillow reads (PNG, JPEG, WebP, GIF…)"
        ) from exc
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
    variant: protocol.Variant = "qta"  # the built-in template of this variant, unless `template` is given
    template: protocol.Template | None = None
    greedy: bool = True  # False: sample (temperature 1), as some served guards are run
    scores: bool = True  # also score every judgment level (one more forward pass per sample)

    @property
    def prompt(self) -> protocol.Template:
        return self.template or protocol.builtin_template(self.variant)


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

    def __init__(
        self, source: str | Path, options: EngineOptions | None = None, *, name: str = "", reask: bool = False
    ):
        from qta.loading import choose_placement, load_model, load_processor

        self.options = options or EngineOptions()
        self.reask = reask  # re-ask once with the format reminder when the output cannot be read
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
        from qta.scores import LevelScorer

        self.scorer = LevelScorer(
            self.model, self.processor, self.placement.device, levels=self.options.prompt.judgments
        )

    # -- prompt building ---------------------------------------------------------------------------------------
    def _render(self, item: AuditInput, thinking: str, has_image: bool, followup: str | None = None) -> str:
        messages = self.options.prompt.messages(
            question=item.question, thinking=thinking, answer=item.answer, has_image=has_image
        )
        if followup is not None:
            messages = protocol.reask_messages(messages, followup)
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

    def _prepare(self, index: int, item: AuditInput, followup: str | None = None) -> _Prepared:
        # The one truncation policy, shared with the training rounds (imported here: this edit stays in _prepare).
        from qta.budget import fit_reasoning

        image = None
        if item.image is not None:
            image = decode_image(item.image, max_pixels=self.options.max_image_pixels)
        has_image = image is not None
        text = self._render(item, item.thinking, has_image, followup)
        length = self._count(text, image)
        truncated = 0
        if length > self.max_input_tokens:

            def measure(thinking: str) -> int:
                return self._count(self._render(item, thinking, has_image, followup), image)

            fitted = fit_reasoning(
                item.thinking,
                limit=self.max_input_tokens,
                measure=measure,
                tokenizer=self.tokenizer,
                tokens=length,
            )
            text = self._render(item, fitted.thinking, has_image, followup)
            length, truncated = fitted.tokens, fitted.removed
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
                do_sample=not self.options.greedy,
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

    def _scores(self, batch: list[_Prepared], outputs: list[tuple[str, int]]) -> list[dict | None]:
        """The level probabilities of each output; a failure here costs the scores, never the verdicts."""
        if not self.options.scores:
            return [None] * len(batch)
        try:
            scored = self.scorer.score(
                [(p.text, p.image, text) for p, (text, _) in zip(batch, outputs, strict=True)],
                batch_size=self.batch_size,
            )
        except Exception:
            log.exception("scoring the judgment levels failed; the verdicts are kept without scores")
            return [None] * len(batch)
        return [s.as_dict() for s in scored]

    def judgment_text(self, item: AuditInput, has_image: bool) -> str:
        """The prompt asking for the judgment straight away, no analysis first: where its value is written."""
        return self._render(item, item.thinking, has_image) + JUDGMENT_CUE

    def stop_ids(self) -> set[int]:
        """The tokens that end the guard's reply (its generation config's end-of-sequence tokens)."""
        eos = self.model.generation_config.eos_token_id
        return set(eos if isinstance(eos, list) else [eos] if eos is not None else [])

    def reading_session(self, image: Any, reading: Reading = "analysis", max_tokens: int | None = None):
        """A function scoring `AuditInput`s that grow from one another, on one PrefixSession (its key/value cache
        kept from one to the next), and the session: `analysis` reads the judgment after the guard's own analysis
        of the text so far (what judging it would score), `cue` asks for the judgment straight away (no
        generation: cheaper, but a guard trained to analyse first may read every prefix alike)."""
        from qta.scores import PrefixSession

        session = PrefixSession(self.scorer, image, max_tokens=max_tokens)
        has_image, stop = image is not None, self.stop_ids()

        def score(item: AuditInput):
            if reading == "cue":
                return session.score(self.judgment_text(item, has_image))
            return session.read(
                self._render(item, item.thinking, has_image), self.options.max_new_tokens, stop
            )[1]

        return score, session

    def prefix_risk(self, item: AuditInput, threshold: float = 0.5, reading: Reading = "analysis") -> dict:
        """P(harmful) per segment and per reasoning step, and the first unsafe step (`located`), the key/value
        cache reused from one prefix to the next."""
        image = decode_image(item.image, max_pixels=self.options.max_image_pixels) if item.image else None
        score, _ = self.reading_session(image, reading)
        return located([score(prefix).harmful for prefix in prefix_items(item)], threshold)

    def judge(
        self, items: Sequence[AuditInput], progress: Callable[[int], None] | None = None
    ) -> list[Verdict]:
        verdicts = self._judge_pass(items, None, progress)
        if not self.reask:
            return verdicts
        # One re-ask, with the format reminder after the unreadable reply, for each invalid output.
        again = [i for i, v in enumerate(verdicts) if v.status == "invalid"]
        if again:
            second = self._judge_pass(
                [items[i] for i in again], [verdicts[i].raw_output for i in again], None
            )
            for i, verdict in zip(again, second, strict=True):
                first = verdicts[i]
                verdict.first_output, verdict.reasked = first.raw_output, True
                verdict.attempts = first.attempts + verdict.attempts
                verdict.latency_ms += first.latency_ms
                verdict.attempt_log = [
                    {"attempt": 1, "outcome": "invalid output", "ms": round(first.latency_ms, 1)},
                    {"attempt": 2, "outcome": "ok" if verdict.status == "valid" else verdict.status,
                     "ms": round(verdict.latency_ms - first.latency_ms, 1)},
                ]  # fmt: skip
                verdicts[i] = verdict
        return verdicts

    def _judge_pass(
        self,
        items: Sequence[AuditInput],
        followups: Sequence[str] | None,
        progress: Callable[[int], None] | None,
    ) -> list[Verdict]:
        verdicts: list[Verdict | None] = [None] * len(items)
        prepared: list[_Prepared] = []
        for index, item in enumerate(items):
            try:
                prepared.append(self._prepare(index, item, followups[index] if followups else None))
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
                scores = self._scores(batch, outputs)
                per_item = (time.perf_counter() - started) * 1000 / len(batch)
                for p, (text, generated), score in zip(batch, outputs, scores, strict=True):
                    verdicts[p.index] = Verdict.from_output(
                        text, variant=self.options.prompt.variant, latency_ms=per_item, prompt_tokens=p.prompt_tokens,
                        completion_tokens=generated, truncated_tokens=p.truncated, scores=score,
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


def openai_messages(item: AuditInput, template: protocol.Template = protocol.QTA_TEMPLATE) -> list[dict]:
    """The template's messages in the OpenAI chat format, the image as a base64 data URL."""
    messages = template.messages(
        question=item.question, thinking=item.thinking, answer=item.answer, has_image=item.image is not None
    )
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


class OpenAIGuard:
    """A guard served by vLLM, SGLang or any OpenAI-compatible server: its calls are coroutines on the process's
    event loop (`qta.endpoint`), up to `max_concurrency` in flight on each server. `replicas` are further base URLs
    serving the same model: the calls are spread over all of them (`qta.endpoint.ReplicaPool`), and
    `self.max_concurrency` is the total."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        replicas: Sequence[str] = (),
        name: str = "",
        api_key: str | None = None,
        timeout_s: float = 120.0,
        max_concurrency: int = 8,
        max_tokens: int = 512,
        retry: RetryPolicy | None = None,
        variant: protocol.Variant = "qta",
        template: protocol.Template | None = None,
        greedy: bool = True,
        reask: bool = False,
        scores: bool = False,
        top_logprobs: int = TOP_LOGPROBS,
    ):
        self.name = name or model
        self.scores = scores  # ask for log-probabilities and read the levels' scores from them
        # Alternatives per position (the OpenAI API's most is 20; vLLM's is its --max-logprobs): a level outside
        # them counts as improbable, which it is for a guard trained to write one.
        self.top_logprobs = top_logprobs
        self.model = model
        self.max_tokens = max_tokens
        self.retry = retry or RetryPolicy()
        self.template = template or protocol.builtin_template(variant)
        self.variant: protocol.Variant = self.template.variant
        self.greedy = greedy
        self.reask = reask  # re-ask once with the format reminder when the output cannot be read
        self.endpoint = ReplicaPool(
            [base_url, *replicas], api_key=api_key, timeout_s=timeout_s, per_replica=max_concurrency
        )
        self.max_concurrency = self.endpoint.max_connections  # over all replicas

    async def ajudge_one(self, item: AuditInput) -> Verdict:
        """One sample: retried calls, then (with `reask`) one re-ask with the format reminder if unreadable."""
        try:
            messages = openai_messages(item, self.template)
        except Exception as exc:
            return Verdict(status="failed", error=f"image could not be decoded ({exc})", attempts=0)
        started = time.perf_counter()
        attempts: list[dict] = []
        first_output = ""
        reasked = (
            False  # not `first_output`: an empty reply is unreadable too, and must not be re-asked forever
        )
        prompt_tokens = completion_tokens = 0
        while True:
            body = {
                "model": self.model,
                "messages": messages,
                "temperature": 0 if self.greedy else 1.0,
                "max_tokens": self.max_tokens,
            }
            if self.scores:
                body.update(logprobs=True, top_logprobs=self.top_logprobs)
            try:
                response = await self.endpoint.chat(body, self.retry, attempts, self.name)
            except EndpointError as exc:
                return Verdict(
                    status="failed", error=f"{type(exc).__name__}: {exc}", attempts=len(attempts),
                    latency_ms=(time.perf_counter() - started) * 1000, attempt_log=attempts,
                    first_output=first_output, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                    reasked=reasked,
                )  # fmt: skip
            choices = response.get("choices") or [{}]
            text = str((choices[0].get("message") or {}).get("content") or "")
            usage = response.get("usage") or {}
            prompt_tokens += int(usage.get("prompt_tokens") or 0)
            completion_tokens += int(usage.get("completion_tokens") or 0)
            verdict = Verdict.from_output(
                text, variant=self.variant, attempts=len(attempts), latency_ms=(time.perf_counter() - started) * 1000,
                prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, first_output=first_output,
                reasked=reasked,
            )  # fmt: skip
            if verdict.status == "valid" or not self.reask or reasked:
                verdict.attempt_log = attempts if len(attempts) > 1 else []
                if self.scores and verdict.status == "valid":
                    verdict.scores = await self._scores(messages, choices[0], text)
                return verdict
            attempts[-1]["outcome"] = "invalid output"
            log.info(
                "%s: output could not be read (%s); re-asking with the format reminder",
                self.name,
                verdict.error,
            )
            first_output, reasked = text, True
            messages = protocol.reask_messages(messages, text)

    async def _scores(self, messages: list[dict], choice: dict, text: str) -> dict | None:
        """P(0), P(0.5), P(1) from the reply's log-probabilities (qta.scores.served_scores); the distributions off
        the written path come from continuing the guard's message (vLLM's and SGLang's continue_final_message).
        None when the server gives no log-probabilities or cannot continue a message."""
        slot = judgment_slot(text, (choice.get("logprobs") or {}).get("content") or [])
        if slot is None:
            return None
        base, lead, known = slot
        pending: dict[str, Any] = {}

        async def dist(written: str) -> dict[str, float] | None:
            if written not in known:
                if written not in pending:
                    pending[written] = asyncio.ensure_future(self._next_token(messages, base + written))
                known[written] = await pending[written]
            return known[written]

        try:
            scores = await served_scores(
                [protocol.format_judgment(j) for j in self.template.judgments], lead, dist
            )
        except Exception:  # a reply of an unexpected shape: the verdict stands without scores
            log.warning("%s: the levels could not be scored from the reply's log-probabilities", self.name)
            return None
        return None if scores is None else scores.as_dict()

    async def ascore_now(self, item: AuditInput):
        """The levels' scores (qta.scores.Scores) if asked for the judgment straight away after `item`: the guard's
        message is continued from the judgment cue. None where the server cannot say."""
        messages = openai_messages(item, self.template)
        asked: dict[str, Any] = {}

        async def dist(written: str) -> dict[str, float] | None:
            if written not in asked:
                asked[written] = asyncio.ensure_future(self._next_token(messages, JUDGMENT_CUE + written))
            return await asked[written]

        return await served_scores([protocol.format_judgment(j) for j in self.template.judgments], "", dist)

    async def aread(self, item: AuditInput, reading: Reading = "analysis"):
        """The levels' scores (qta.scores.Scores) of `item` as TransformersGuard.reading_session reads it: after
        the guard's own analysis (one judged call), or at the judgment cue. None where the server cannot say."""
        if reading == "cue":
            return await self.ascore_now(item)
        verdict = await self.ajudge_one(item)
        from qta.scores import Scores

        return Scores(verdict.scores["levels"]) if verdict.scores else None

    async def aprefix_risk(
        self, item: AuditInput, threshold: float = 0.5, reading: Reading = "analysis"
    ) -> dict | None:
        """As TransformersGuard.prefix_risk, from the server: all prefixes in flight together (vLLM's prefix cache
        makes each cost its new tokens). None where the server cannot say."""
        scored = await asyncio.gather(*(self.aread(prefix, reading) for prefix in prefix_items(item)))
        if any(s is None for s in scored):
            return None
        return located([s.harmful for s in scored], threshold)

    def prefix_risk(
        self, item: AuditInput, threshold: float = 0.5, reading: Reading = "analysis"
    ) -> dict | None:
        return wait(self.aprefix_risk(item, threshold, reading))

    async def _next_token(self, messages: list[dict], partial: str) -> dict[str, float] | None:
        body = {
            "model": self.model,
            "messages": [*messages, {"role": "assistant", "content": partial}],
            "max_tokens": 1,
            "temperature": 0,
            "logprobs": True,
            "top_logprobs": self.top_logprobs,
            "continue_final_message": True,
            "add_generation_prompt": False,
        }
        try:
            response = await self.endpoint.chat(body, RetryPolicy(attempts=1), [], self.name)
        except EndpointError:
            return None
        content = ((response.get("choices") or [{}])[0].get("logprobs") or {}).get("content") or []
        return top_logprobs(content[0]) if content else None

    async def ajudge(self, items: Sequence[AuditInput]) -> list[Verdict]:
        return list(await asyncio.gather(*(self.ajudge_one(item) for item in items)))

    def judge_one(self, item: AuditInput) -> Verdict:
        return wait(self.ajudge_one(item))

    def judge(self, items: Sequence[AuditInput]) -> list[Verdict]:
        """Every item's verdict, in order, up to `max_concurrency` calls in flight (the servers' connections)."""
        return wait(self.ajudge(items))
