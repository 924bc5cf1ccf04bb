"""Risk scores from a guard's own probabilities: after its analysis, how likely it was to write each judgment level.

The guard writes `… Judgment: <level>` and stops. The score of a level is the probability of that level's whole token
sequence at the judgment slot, times the probability that the number ends there (any next token that is not a digit
or a point), so "0" is not credited with the mass of "0.5", which starts with the same token. The levels' scores are
normalised over the levels the protocol allows: P(0), P(0.5), P(1), with P(harmful) = P(0.5) + P(1) as the paper
reads 0.5, and P(1) alone under the strict reading.

One forward pass per sample covers every level: a pass over "0.5" also gives the distributions after "" and "0",
which "1" and "0" need, so only the sequences that are not the start of another level's are run ("0.5" and "1").
Plain Python around torch; the engine (qta/engine.py) calls it with its own model and processor.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from qta import protocol


def judgment_prefix(output: str) -> str:
    """The output up to where the judgment's value is written: the last judgment key's value start, or — for an
    output that wrote none — the output with the protocol's `Judgment: ` line added, as the guard was trained."""
    starts = protocol.judgment_value_starts(output)
    if starts:
        return output[: starts[-1]]
    return output.rstrip() + "\nJudgment: "


@dataclass(frozen=True)
class Scores:
    """Normalised probabilities of the judgment levels, keyed as the protocol writes them ("0", "0.5", "1")."""

    levels: dict[str, float]

    @property
    def harmful(self) -> float:
        """P(harmful) with 0.5 read as harmful (the paper's reading): P(0.5) + P(1)."""
        return sum(p for level, p in self.levels.items() if float(level) > 0)

    @property
    def harmful_strict(self) -> float:
        """P(harmful) with 0.5 read as safe: P(1)."""
        return self.levels.get("1", 0.0)

    def as_dict(self) -> dict[str, Any]:
        rounded = {level: round(p, 6) for level, p in self.levels.items()}
        return {
            "levels": rounded,
            "harmful": round(self.harmful, 6),
            "harmful_strict": round(self.harmful_strict, 6),
        }


def _normalise(logs: dict[str, float]) -> Scores:
    top = max(logs.values())
    weights = {level: math.exp(lp - top) if lp > -math.inf else 0.0 for level, lp in logs.items()}
    total = sum(weights.values()) or 1.0
    return Scores({level: w / total for level, w in weights.items()})


class LevelScorer:
    """Scores the judgment levels for prompts already rendered by a guard (chat template applied, generation
    prompt added): `score([(rendered prompt, image or None, output)…])` → one Scores per item."""

    def __init__(self, model, processor, device, levels: Sequence[float] = protocol.JUDGMENTS) -> None:
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.device = device
        self.levels = [protocol.format_judgment(level) for level in levels]
        self._continuing: Any = None

    def continuing_ids(self):
        """Token ids that would continue a number (a digit or a point first): the number has not ended."""
        if self._continuing is None:
            import torch

            vocab = self.tokenizer.get_vocab()
            ids = [
                i
                for i in vocab.values()
                if (text := self.tokenizer.decode([i])) and (text[0].isdigit() or text[0] == ".")
            ]
            self._continuing = torch.tensor(sorted(ids), dtype=torch.long)
        return self._continuing

    def _tails(self, base: str, window: int = 64) -> tuple[int, dict[str, list[int]]]:
        """Each level's own tokens after what it shares with the base text, tokenized jointly as the model reads
        them, and how many of the base's last tokens a level's first token merges with (usually none). Only the
        base's last characters are tokenized: a merge reaches back a token or two, never `window` characters."""
        encode = self.tokenizer.encode
        end = base[-window:]
        joint = {level: encode(end + level, add_special_tokens=False) for level in self.levels}
        own = encode(end, add_special_tokens=False)
        common = len(own)
        for ids in joint.values():
            n = 0
            while n < min(common, len(ids)) and own[n] == ids[n]:
                n += 1
            common = n
        return len(own) - common, {level: ids[common:] for level, ids in joint.items()}

    def _runs(self, tails: dict[str, list[int]]) -> list[str]:
        """The levels whose tokens do not begin another level's: only they need a pass of their own."""
        return [
            level
            for level, tail in tails.items()
            if not any(other != level and len(t) > len(tail) and t[: len(tail)] == tail
                       for other, t in tails.items())
        ]  # fmt: skip

    def _level_scores(self, tails: dict[str, list[int]], steps_of: dict[str, Any]) -> Scores:
        """Scores from each run's next-token log-probabilities ((tail length + 1) × vocab: at each of its tokens and
        after it): a level's tokens are read along the run it begins, then the number must end."""
        continuing = self.continuing_ids()
        level_logs = {}
        for level, tail in tails.items():
            run = next(run for run, steps in steps_of.items() if tails[run][: len(tail)] == tail)
            steps = steps_of[run]
            lp = sum(float(steps[j, tail[j]]) for j in range(len(tail)))
            # The number ends after the level: any next token but a digit or a point.
            ends = 1.0 - float(steps[len(tail)].exp()[continuing].sum())
            level_logs[level] = lp + math.log(max(ends, 1e-12))
        return _normalise(level_logs)

    def score(self, items: Sequence[tuple[str, Any, str]], batch_size: int = 8) -> list[Scores]:
        rows: list[tuple[str, list[int], Any]] = []  # (text, its tail ids, image)
        plans: list[tuple[dict[str, list[int]], dict[str, int]]] = []  # (tails, run level → row)
        for prompt, image, output in items:
            base = prompt + judgment_prefix(output)
            tails = self._tails(base)[1]
            runs = self._runs(tails)
            plans.append((tails, {level: len(rows) + k for k, level in enumerate(runs)}))
            rows.extend((base + level, tails[level], image) for level in runs)
        logs = self._row_logprobs(rows, batch_size)
        return [self._level_scores(tails, {run: logs[row] for run, row in at.items()}) for tails, at in plans]

    def score_prefixes(
        self, texts: Sequence[str], image: Any = None, timings: list[float] | None = None
    ) -> list[Scores]:
        """Scores after each of several texts that grow from one another (the reasoning step by step, then the
        answer), each ending where the judgment is written, with one PrefixSession: each costs its new tokens and
        the level tokens, not its whole length."""
        session = PrefixSession(self, image)
        out = []
        for text in texts:
            started = time.perf_counter()
            out.append(session.score(text))
            if timings is not None:
                timings.append(time.perf_counter() - started)
        return out

    def _ids(self, tokens: list[int]):
        import torch

        return torch.tensor([tokens], dtype=torch.long, device=self.device)

    def _row_logprobs(self, rows: list[tuple[str, list[int], Any]], batch_size: int) -> list:
        """Per row: log-probabilities of the next token at each of its tail's positions and after its tail, a
        (tail length + 1, vocab) tensor. Rows are processed as the engine generates (left padding, the image's
        placeholder expanded by the processor), so the tail is the end of every row."""
        import torch

        out: list = []
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            images = [image for _, _, image in chunk if image is not None]
            inputs = self.processor(
                text=[text for text, _, _ in chunk], images=images or None, padding=True, return_tensors="pt"
            ).to(self.device)
            keep = max(len(tail) for _, tail, _ in chunk) + 1
            with torch.inference_mode():
                logits = self.model(**inputs, logits_to_keep=keep).logits
            for row, (_, tail, _) in enumerate(chunk):
                ids = inputs["input_ids"][row]
                if tail and ids[len(ids) - len(tail) :].tolist() != tail:
                    raise RuntimeError(
                        "the processor tokenized a judgment level differently from the tokenizer"
                    )
                out.append(torch.log_softmax(logits[row, keep - len(tail) - 1 :].float(), dim=-1).cpu())
        return out


class TooManyTokens(ValueError):
    """A text past the PrefixSession's token limit (the guard's context)."""


class PrefixSession:
    """Scores after texts that grow from one another, one at a time as they come (a trace read step by step, or
    streamed in while the model writes it). The key/value cache of what the last text and the next share is kept:
    a text costs its new tokens and the level tokens, not its whole length. A text that is not a continuation (an
    edit far back) is still scored right: the cache is cropped to what is shared, at worst to nothing."""

    def __init__(self, scorer: LevelScorer, image: Any = None, max_tokens: int | None = None) -> None:
        self.scorer = scorer
        self.image = image
        self.max_tokens = max_tokens  # a longer text is refused (TooManyTokens) before the model runs
        self.cache: Any = None
        self.cached: list[int] = []  # the token ids the cache holds

    @property
    def tokens(self) -> int:
        return len(self.cached)

    @property
    def nbytes(self) -> int:
        """Memory the key/value cache holds (the image's positions included)."""
        if self.cache is None:
            return 0
        return sum(
            tensor.numel() * tensor.element_size()
            for layer in self.cache.layers
            for tensor in (getattr(layer, "keys", None), getattr(layer, "values", None))
            if tensor is not None and hasattr(tensor, "numel")
        )

    def close(self) -> None:
        self.cache, self.cached = None, []

    def _feed(self, ids: list[int], inputs: dict, tail: list[int]):
        """Run what the cache does not hold of `ids` (and `tail` after it) and return the logits of those positions:
        the cache is cropped to what it shares with `ids`, or started afresh (with the pixels) when that is nothing
        or the image itself would move."""
        import torch
        from transformers import DynamicCache

        scorer = self.scorer
        shared = 0
        while shared < min(len(ids), len(self.cached)) and ids[shared] == self.cached[shared]:
            shared += 1
        shared = min(shared, len(ids) - 1)  # at least one new token: its logits are the first step
        if self.image is not None and shared <= _last_image_token(ids, scorer.tokenizer):
            shared = 0  # the image itself changed place: start again with the pixels
        if shared == 0 or self.cache is None:
            self.cache, self.cached = DynamicCache(), []
            language = getattr(scorer.model, "model", scorer.model)
            language.rope_deltas = None  # positions are worked out afresh from this text
            fresh = dict(inputs)
            if tail:
                fresh["input_ids"] = torch.cat([fresh["input_ids"], scorer._ids(tail)], dim=1)
                if "attention_mask" in fresh:
                    fresh["attention_mask"] = torch.ones_like(fresh["input_ids"])
                if "mm_token_type_ids" in fresh:
                    pad = torch.zeros((1, len(tail)), dtype=fresh["mm_token_type_ids"].dtype)
                    fresh["mm_token_type_ids"] = torch.cat(
                        [fresh["mm_token_type_ids"], pad.to(scorer.device)], 1
                    )
        else:
            _crop_to(self.cache, shared)
            fresh = {"input_ids": torch.cat([inputs["input_ids"][:, shared:], scorer._ids(tail)], dim=1)}
        return scorer.model(**fresh, cache=self.cache, use_cache=True, logits_to_keep=len(tail) + 1).logits[0]

    def _inputs(self, text: str, cut: int = 0):
        scorer = self.scorer
        inputs = scorer.processor(
            text=[text], images=[self.image] if self.image is not None else None, return_tensors="pt"
        ).to(scorer.device)
        keep = inputs["input_ids"].shape[1] - cut
        for key in ("input_ids", "attention_mask", "mm_token_type_ids"):
            if key in inputs:
                inputs[key] = inputs[key][:, :keep]
        ids = inputs["input_ids"][0].tolist()
        if self.max_tokens is not None and len(ids) > self.max_tokens:
            raise TooManyTokens(
                f"the text is {len(ids)} tokens, over the guard's input limit of {self.max_tokens} tokens"
            )
        return inputs, ids

    def read(self, prompt: str, max_new_tokens: int, stop: set[int]) -> tuple[str, Scores]:
        """The guard's own analysis after `prompt` (greedy, written on the kept cache, so the prompt costs only what
        the cache does not hold), then the levels' scores at the judgment slot it writes: what judging the prompt
        would score, read as the text grows."""
        import torch

        scorer = self.scorer
        with torch.inference_mode():
            inputs, ids = self._inputs(prompt)
            logits = self._feed(ids, inputs, [])[-1]
            self.cached = ids
            written: list[int] = []
            while len(written) < max_new_tokens:
                token = int(logits.argmax())
                if token in stop:
                    break
                written.append(token)
                logits = scorer.model(
                    input_ids=scorer._ids([token]), cache=self.cache, use_cache=True
                ).logits[0, -1]
            self.cached = ids + written
        output = scorer.tokenizer.decode(written, skip_special_tokens=True)
        return output, self.score(prompt + judgment_prefix(output))

    def score(self, text: str) -> Scores:
        """The levels' scores after `text` (which ends where the judgment is written)."""
        import torch

        scorer = self.scorer
        with torch.inference_mode():
            merged, tails = scorer._tails(text)
            # Where a level's first token would merge with the text's last, the text stops before it.
            inputs, ids = self._inputs(text, cut=merged)
            runs = scorer._runs(tails)
            # The new tokens and the first level's go in one call; the other levels each in one more.
            logits = self._feed(ids, inputs, tails[runs[0]])
            cache = self.cache
            _crop_to(cache, len(ids))
            self.cached = ids
            steps = torch.log_softmax(logits.float(), dim=-1).cpu()
            steps_of = {runs[0]: steps}
            for run in runs[1:]:
                tail = tails[run]
                if not tail:
                    steps_of[run] = steps[:1]
                    continue
                more = scorer.model(input_ids=scorer._ids(tail), cache=cache, use_cache=True).logits[0]
                _crop_to(cache, len(ids))
                steps_of[run] = torch.cat([steps[:1], torch.log_softmax(more.float(), dim=-1).cpu()])
            return scorer._level_scores(tails, steps_of)


def _last_image_token(ids: list[int], tokenizer) -> int:
    """The position of the last image placeholder token in the ids (-1 without an image)."""
    pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    positions = [i for i, token in enumerate(ids) if token == pad]
    return positions[-1] if positions else -1


def _crop_to(cache, length: int) -> None:
    """Keep the first `length` positions of a key/value cache (this transformers' crop takes how many to drop)."""
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)


# -- served guards ------------------------------------------------------------------------------------------------
# A served guard (vLLM, SGLang) gives each generated token's log-probability and its top alternatives. The levels
# are read from those at the judgment slot, as for a local guard: a level's tokens along the tree of continuations,
# then the number ending. Where the tree leaves the path the guard wrote ("0" and "0.5" after it wrote "1"), the
# distribution is asked for by continuing the guard's own message up to that point (one token, prefix-cached).

TOP_LOGPROBS = 20  # the OpenAI API's most (vLLM's default --max-logprobs)


def top_logprobs(entry: dict) -> dict[str, float]:
    """One position's distribution as token text → log-probability: its top alternatives and the token taken."""
    top = {str(alt.get("token", "")): float(alt["logprob"]) for alt in entry.get("top_logprobs") or []}
    if "token" in entry and "logprob" in entry:
        top.setdefault(str(entry["token"]), float(entry["logprob"]))
    return top


def judgment_slot(text: str, content: list[dict]) -> tuple[str, str, dict[str, dict[str, float]]] | None:
    """Where the judgment's value is written in a served guard's output: the output before the token that holds
    the slot, the part of that token before the value (a space merged into it, say), and the distributions known
    along the path from there (keyed by the text written since that token's start). None when the output has no
    judgment key or its tokens do not spell it."""
    starts = protocol.judgment_value_starts(text)
    if not starts or not content:
        return None
    encoded = text.encode()
    at = len(text[: starts[-1]].encode())
    pieces = [bytes(entry["bytes"]) if entry.get("bytes") is not None else str(entry.get("token", "")).encode()
              for entry in content]  # fmt: skip
    starts_at, offset = [], 0
    for piece in pieces:
        if offset >= len(encoded):
            break  # a stop token after the text (a server may list it)
        if encoded[offset : offset + len(piece)] != piece:
            return None
        starts_at.append(offset)
        offset += len(piece)
    index = next((k for k, begin in enumerate(starts_at) if begin <= at < begin + len(pieces[k])), None)
    if index is None:
        return None
    offset = starts_at[index]
    try:
        base, lead = encoded[:offset].decode(), encoded[offset:at].decode()
    except UnicodeDecodeError:
        return None
    known: dict[str, dict[str, float]] = {}
    written = b""
    for entry, piece in zip(content[index:], pieces[index:], strict=True):
        try:
            known[written.decode()] = top_logprobs(entry)
        except UnicodeDecodeError:
            break
        written += piece
    return base, lead, known


async def served_scores(levels: Sequence[str], lead: str, dist) -> Scores | None:
    """The levels' scores from next-token distributions: `await dist(s)` gives the top log-probabilities after
    the judgment slot's text plus `s` (None where it cannot be had). None when no level can be read."""

    async def probability(target: str, written: str) -> float:
        top = await dist(written)
        if top is None:
            raise LookupError(written)
        if written == target:  # the number must end here: neither a digit nor a point next
            going_on = sum(
                math.exp(lp) for token, lp in top.items() if token[:1].isdigit() or token[:1] == "."
            )
            return max(0.0, 1.0 - going_on)
        total = 0.0
        for token, lp in top.items():
            if token and target.startswith(written + token):
                total += math.exp(lp) * await probability(target, written + token)
        return total

    logs = {}
    try:
        for level in levels:
            p = await probability(lead + level, "")
            logs[level] = math.log(p) if p > 0 else -math.inf
    except LookupError:
        return None
    if all(lp == -math.inf for lp in logs.values()):
        return None
    return _normalise(logs)
