"""Snapshot records and the formats trainers read (no Django here: the training child process uses it).

A snapshot record (one line of `records.jsonl`) holds the QTA text, the image's sha256 (or null) and what the model
should learn: `target` (SFT), or `chosen` / `rejected` (the DPO stages), each an `Analysis … Judgment …` text, with
the judgments alongside and `origin` saying where the record came from.

- TRL (conversational, images apart): SFT rows `{"prompt", "completion", "images"}`, DPO rows
  `{"prompt", "chosen", "rejected", "images"}`; message contents are strings, so TRL puts the image placeholder
  before the user text itself.
- LLaMA-Factory multimodal sharegpt: `{"messages": [...], "images": [...]}` with an `<image>` tag in the user turn
  (SFT), `{"conversations", "chosen", "rejected", "images"}` for DPO (ranking datasets).
"""

from __future__ import annotations

from typing import Any

from guardmodel import protocol

PAIR_STAGES = ("dpo", "ogdpo")


def qa_target(text: str) -> str:
    """A QTA target rewritten for the QA-only prompt: levels 0/1, 0.5 counted harmful (as every binary metric)."""
    parsed = protocol.parse_output(text)
    if parsed.judgment is None:
        return text
    return protocol.format_target(
        analysis=parsed.analysis, judgment=1.0 if protocol.is_harmful(parsed.judgment) else 0.0
    )


def prompt_messages(record: dict[str, Any], *, variant: protocol.Variant = "qta") -> list[dict[str, str]]:
    if record.get(
        "prompt"
    ):  # a record with a conversation of its own (the demo's reasoning model learns to answer)
        return record["prompt"]
    user = protocol.user_text(
        question=record["question"], thinking=record["thinking"], answer=record["answer"], variant=variant
    )
    return [
        {"role": "system", "content": protocol.system_prompt(variant)},
        {"role": "user", "content": user},
    ]


def _answer(text: str, variant: protocol.Variant) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": qa_target(text) if variant == "qa" else text}]


def trl_row(
    record: dict[str, Any], stage: str, images: list[Any], *, variant: protocol.Variant = "qta"
) -> dict[str, Any]:
    """One TRL row; `images` is [] or [the image] (a path for export, a PIL image for training)."""
    row: dict[str, Any] = {"prompt": prompt_messages(record, variant=variant)}
    if stage in PAIR_STAGES:
        row["chosen"] = _answer(record["chosen"], variant)
        row["rejected"] = _answer(record["rejected"], variant)
    else:
        row["completion"] = _answer(record["target"], variant)
    row["images"] = images
    return row


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
