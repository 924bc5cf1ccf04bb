"""Snapshot records and the formats trainers read (no Django here: the training child process uses it).

A snapshot record (one line of `records.jsonl`) holds the QTA text, the image's sha256 (or null) and what the model
should learn: `target` (SFT), or `chosen` / `rejected` (the DPO stages), each an `Analysis … Judgment …` text, with
the judgments alongside and `origin` saying where the record came from.

- TRL (conversational, images apart): SFT rows `{"prompt", "completion", "images"}`, DPO rows
  `{"prompt", "chosen", "rejected", "images"}`, the prompt in the template the round's checkpoint will be asked
  with; message contents are strings, so TRL puts the image placeholder before the user text itself. Before a round
  trains, `RecordBudget` fits each record into the round's token budget the way inference does: the middle of the
  reasoning goes, the image, question, answer and completion stay.
- LLaMA-Factory multimodal sharegpt: `{"messages": [...], "images": [...]}` with an `<image>` tag in the user turn
  (SFT), `{"conversations", "chosen", "rejected", "images"}` for DPO (ranking datasets).
"""

from __future__ import annotations

import os
from typing import Any

from qta import budget, protocol

PAIR_STAGES = ("dpo", "ogdpo")


def qa_target(text: str) -> str:
    """A QTA target rewritten for the QA-only prompt: levels 0/1, 0.5 counted harmful (as every binary metric)."""
    parsed = protocol.parse_output(text)
    if parsed.judgment is None:
        return text
    return protocol.format_target(
        analysis=parsed.analysis, judgment=1.0 if protocol.is_harmful(parsed.judgment) else 0.0
    )


def round_template(template: protocol.Template | None, prompt_variant: str = "qta") -> protocol.Template:
    """The template a round trains with: its base checkpoint's (the one the new checkpoint will be asked with), or
    the built-in QA template for the QA-only ablation (`prompt_variant=qa`)."""
    if prompt_variant == "qa":
        return protocol.QA_TEMPLATE
    return template or protocol.QTA_TEMPLATE


def template_spec(template: protocol.Template) -> dict[str, Any]:
    """The template as the runner's config.json carries it."""
    return {
        "name": template.name,
        "system": template.system,
        "variant": template.variant,
        "layout": template.layout,
        "builtin": template.builtin,
        "version": template.version,
    }


def template_from_spec(spec: dict[str, Any] | None) -> protocol.Template | None:
    if not spec:
        return None
    return protocol.Template(
        spec["name"], spec["system"], spec["variant"], spec["layout"], bool(spec["builtin"])
    )


def prompt_messages(
    record: dict[str, Any], *, template: protocol.Template | None = None, variant: protocol.Variant = "qta"
) -> list[dict[str, str]]:
    """The system prompt and the user turn of `template` (default: the built-in one of `variant`), contents as
    strings: TRL puts the image part first in the user turn, where the template has it too."""
    # A record with a conversation of its own (the demo's reasoning model learns to answer).
    if record.get("prompt"):
        return record["prompt"]
    template = template or protocol.builtin_template(variant)
    user = template.user_text(
        question=record["question"], thinking=record["thinking"], answer=record["answer"]
    )
    return [{"role": "system", "content": template.system}, {"role": "user", "content": user}]


def _answer(text: str, variant: protocol.Variant) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": qa_target(text) if variant == "qa" else text}]


def completions(record: dict[str, Any], stage: str) -> list[str]:
    """What the round teaches for this record: the target (SFT), or chosen and rejected."""
    return [record["chosen"], record["rejected"]] if stage in PAIR_STAGES else [record["target"]]


def trl_row(
    record: dict[str, Any],
    stage: str,
    images: list[Any],
    *,
    template: protocol.Template | None = None,
    variant: protocol.Variant = "qta",
) -> dict[str, Any]:
    """One TRL row; `images` is [] or [the image] (a path for export, a PIL image for training)."""
    template = template or protocol.builtin_template(variant)
    row: dict[str, Any] = {"prompt": prompt_messages(record, template=template)}
    if stage in PAIR_STAGES:
        row["chosen"] = _answer(record["chosen"], template.variant)
        row["rejected"] = _answer(record["rejected"], template.variant)
    else:
        row["completion"] = _answer(record["target"], template.variant)
    row["images"] = images
    return row


def record_name(record: dict[str, Any], index: int) -> str:
    """How errors and reports name a record: its sample, its line in an imported file, else its position."""
    if record.get("sample_id") is not None:
        return f"sample #{record['sample_id']}"
    if record.get("source_line") is not None:
        return f"line {record['source_line']}"
    return f"record {index + 1}"


class RecordTooLong(ValueError):
    """A record that cannot fit the round's token budget even with all of its reasoning removed."""


def _multimodal(messages: list[dict[str, Any]], has_image: bool) -> list[dict[str, Any]]:
    """Messages as TRL's `prepare_multimodal_messages` makes them: text parts, the image part first in the first
    user turn."""
    out, placed = [], not has_image
    for message in messages:
        content = message["content"]
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
            if message["role"] == "user" and not placed:
                content, placed = [{"type": "image"}, *content], True
        out.append({**message, "content": content})
    return out


# A stand-in prompt for rendering completions alone.
_PROBE = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]


class RecordBudget:
    """Counts records the way TRL's vision collators build them and cuts the over-long ones to the round's token
    budget (`max_length`) with the one truncation policy (`qta.budget.fit_reasoning`).

    A record's length is its chat-rendered prompt (generation prompt added, the image placeholder expanded to the
    image's tokens) plus its completion (DPO stages: the longer of chosen and rejected); that is what each of TRL's
    rows holds. So after `fit`, TRL's own `max_length` (the same budget) never cuts anything, image tokens included.
    The completion is never cut: a record too long without its reasoning raises `RecordTooLong`, naming it.
    """

    def __init__(self, processor: Any, *, template: protocol.Template, stage: str, budget: int):
        self.processor, self.template, self.stage, self.budget = processor, template, stage, budget
        self._probe = self._render(_PROBE, False, True)
        self._completions: dict[str, str] = {}

    def _render(self, messages: list[dict[str, Any]], has_image: bool, generation_prompt: bool) -> str:
        return self.processor.apply_chat_template(
            _multimodal(messages, has_image), tokenize=False, add_generation_prompt=generation_prompt
        )

    def _prompt_text(self, record: dict[str, Any], thinking: str, has_image: bool) -> str:
        messages = prompt_messages({**record, "thinking": thinking}, template=self.template)
        return self._render(messages, has_image, True)

    def _completion_text(self, text: str) -> str:
        """A completion's text after the prompt, as TRL cuts it from the rendered prompt + completion. It does not
        depend on what the prompt says, so a short stand-in prompt is rendered (many records share a target)."""
        if text not in self._completions:
            whole = self._render(_PROBE + _answer(text, self.template.variant), False, False)
            self._completions[text] = whole[len(os.path.commonprefix([self._probe, whole])) :]
        return self._completions[text]

    def lengths(
        self, records: list[dict[str, Any]], image_sizes: list[tuple[int, int] | None]
    ) -> list[tuple[int, int]]:
        """(prompt tokens, longest completion tokens) of each record; the texts are tokenized in batches."""
        prompts = [
            self._prompt_text(r, r.get("thinking", ""), size is not None)
            for r, size in zip(records, image_sizes, strict=True)
        ]
        prompt_counts = budget.prompt_tokens(self.processor, prompts, image_sizes)
        texts = {self._completion_text(t) for r in records for t in completions(r, self.stage)}
        counts = dict(zip(texts, budget.text_tokens(self.processor.tokenizer, list(texts)), strict=True))
        longest = [max(counts[self._completion_text(t)] for t in completions(r, self.stage)) for r in records]
        return list(zip(prompt_counts, longest, strict=True))

    def fit(
        self,
        record: dict[str, Any],
        index: int,
        image_size: tuple[int, int] | None,
        prompt: int,
        completion: int,
    ) -> tuple[dict[str, Any], int]:
        """The record with its reasoning cut to fit the budget, and how many reasoning tokens went."""
        if prompt + completion <= self.budget:
            return record, 0
        has_image = image_size is not None

        def measure(thinking: str) -> int:
            text = self._prompt_text(record, thinking, has_image)
            return budget.prompt_tokens(self.processor, [text], [image_size])[0] + completion

        name = record_name(record, index)
        if record.get("prompt") or self.template.variant == "qa":  # no reasoning in the prompt to cut
            raise RecordTooLong(
                f"{name}: {prompt + completion} tokens with its completion, over max_length {self.budget}, and "
                "its prompt has no reasoning to cut: raise max_length or leave the record out"
            )
        try:
            fitted = budget.fit_reasoning(
                record["thinking"],
                limit=self.budget,
                measure=measure,
                tokenizer=self.processor.tokenizer,
                tokens=prompt + completion,
            )
        except budget.BudgetError as exc:
            raise RecordTooLong(
                f"{name}: needs {exc.tokens} tokens with all of its reasoning removed (image, question, answer and "
                f"the longer completion, which is never cut), over max_length {self.budget}: raise max_length or "
                "leave the record out"
            ) from None
        return {**record, "thinking": fitted.thinking}, fitted.removed

    def fit_all(
        self, records: list[dict[str, Any]], image_sizes: list[tuple[int, int] | None]
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Every record within the budget, and the round's truncation report: how many were cut, the reasoning
        tokens removed (in all, and at most from one), the longest record before the cut."""
        report: dict[str, Any] = {
            "max_length": self.budget,
            "records": len(records),
            "cut": 0,
            "removed_total": 0,
            "removed_max": 0,
            "longest_tokens": 0,
            "longest_record": "",
        }
        fitted = []
        for index, (record, size, (prompt, completion)) in enumerate(
            zip(records, image_sizes, self.lengths(records, image_sizes), strict=True)
        ):
            if prompt + completion > report["longest_tokens"]:
                report.update(longest_tokens=prompt + completion, longest_record=record_name(record, index))
            record, removed = self.fit(record, index, size, prompt, completion)
            if removed:
                report["cut"] += 1
                report["removed_total"] += removed
                report["removed_max"] = max(report["removed_max"], removed)
            fitted.append(record)
        return fitted, report

    def preview(
        self, records: list[dict[str, Any]], image_sizes: list[tuple[int, int] | None]
    ) -> dict[str, Any]:
        """What the round's preparation will do, counted without cutting: the records over the budget, about how
        many reasoning tokens they lose (at least their overflow), the longest record, and the records that cannot
        fit at all."""
        pairs = self.lengths(records, image_sizes)
        lengths = [prompt + completion for prompt, completion in pairs]
        over = [i for i, n in enumerate(lengths) if n > self.budget]
        uncuttable = {i for i in over if records[i].get("prompt") or self.template.variant == "qa"}
        cuttable = [i for i in over if i not in uncuttable]
        # With no reasoning left but the mark: the least each record can shrink to.
        bare = [
            self._prompt_text(
                records[i], budget.TRUNCATION_MARK.format(n=lengths[i]), image_sizes[i] is not None
            )
            for i in cuttable
        ]
        floors = budget.prompt_tokens(self.processor, bare, [image_sizes[i] for i in cuttable])
        too_long = uncuttable | {
            i for i, floor in zip(cuttable, floors, strict=True) if floor + pairs[i][1] > self.budget
        }
        unfit = [record_name(records[i], i) for i in sorted(too_long)]
        longest = max(range(len(lengths)), key=lengths.__getitem__, default=None)
        return {
            "max_length": self.budget,
            "records": len(records),
            "over": len(over),
            "removed_estimate": sum(lengths[i] - self.budget for i in over),
            "longest_tokens": 0 if longest is None else lengths[longest],
            "longest_record": "" if longest is None else record_name(records[longest], longest),
            "unfit": unfit,
        }


def sharegpt_row(record: dict[str, Any], stage: str, images: list[str]) -> dict[str, Any]:
    """One LLaMA-Factory row (dataset_info: formatting sharegpt, columns messages/images, ranking for DPO)."""
    user = protocol.user_text(
        question=record["question"], thinking=record["thinking"], answer=record["answer"]
    )
    user_turn = {"from": "human", "value": ("<image>" if images else "") + user}
    if stage in PAIR_STAGES:
        return {
            "conversations": [user_turn],
            "chosen": {"from": "gpt", "value": record["chosen"]},
            "rejected": {"from": "gpt", "value": record["rejected"]},
            "system": protocol.system_prompt(),
            "images": images,
        }
    return {
        "conversations": [user_turn, {"from": "gpt", "value": record["target"]}],
        "system": protocol.system_prompt(),
        "images": images,
    }


def sharegpt_dataset_info(name: str, stage: str, file_name: str) -> dict[str, Any]:
    columns = {"messages": "conversations", "system": "system", "images": "images"}
    entry: dict[str, Any] = {"file_name": file_name, "formatting": "sharegpt", "columns": columns}
    if stage in PAIR_STAGES:
        entry["ranking"] = True
        columns.update({"chosen": "chosen", "rejected": "rejected"})
    return {name: entry}
