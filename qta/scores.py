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

    def _tails(self, base: str) -> tuple[list[int], dict[str, list[int]]]:
        """The token ids the base text and every level share, and each level's own tokens after them. Tokenized
        jointly, as the model reads them; where a level's first token merges with the base's last, the shared part
        is shorter."""
        encode = self.tokenizer.encode
        joint = {level: encode(base + level, add_special_tokens=False) for level in self.levels}
        common = encode(base, add_special_tokens=False)
        for ids in joint.values():
            n = 0
            while n < min(len(common), len(ids)) and common[n] == ids[n]:
                n += 1
            common = common[:n]
        return common, {level: ids[len(common) :] for level, ids in joint.items()}

    def score(self, items: Sequence[tuple[str, Any, str]], batch_size: int = 8) -> list[Scores]:
        rows: list[tuple[str, list[int], Any]] = []  # (text, its tail ids, image)
        plans: list[dict[str, tuple[int, int]]] = []  # level → (row, tail length)
        for prompt, image, output in items:
            base = prompt + judgment_prefix(output)
            tails = self._tails(base)[1]
            # Only the levels whose tokens do not begin another level's need a pass of their own.
            runs = [
                level
                for level, tail in tails.items()
                if not any(other != level and len(t) > len(tail) and t[: len(tail)] == tail
                           for other, t in tails.items())
            ]  # fmt: skip
            first = len(rows)
            rows.extend((base + level, tails[level], image) for level in runs)
            plan = {}
            for level, tail in tails.items():
                k = next(k for k, run in enumerate(runs) if tails[run][: len(tail)] == tail)
                plan[level] = (first + k, len(tail))
            plans.append(plan)
        logs = self._row_logprobs(rows, batch_size)
        continuing = self.continuing_ids()
        results = []
        for plan in plans:
            level_logs = {}
            for level, (row, length) in plan.items():
                steps, tail = logs[row], rows[row][1]
                lp = sum(float(steps[j, tail[j]]) for j in range(length))
                # The number ends after the level: any next token but a digit or a point.
                ends = 1.0 - float(steps[length].exp()[continuing].sum())
                level_logs[level] = lp + math.log(max(ends, 1e-12))
            results.append(_normalise(level_logs))
        return results

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
