"""Reading training files made elsewhere — the GuardTrace-VL release's SFT / DPO files, LLaMA-Factory sharegpt,
TRL conversational — into snapshot records (no database here; `datasets.snapshot_import` stores them).

Accepted row shapes (a JSON list, or JSON Lines):
- LLaMA-Factory sharegpt: `conversations` ({from, value}) or `messages` ({role, content}), `images`; an SFT row ends
  with the assistant's turn, a DPO row has `chosen` / `rejected` (a turn or a string);
- TRL conversational: `prompt` (messages or a string) with `completion` (SFT) or `chosen` / `rejected` (DPO),
  `images`; message contents may be strings or lists of `{"type": "text" | "image"}` parts;
- the release's plain rows: `question`, `thinking`, `response` (or `answer`), `image_name` (or `image`), with
  `output` (SFT) or `chosen` / `rejected` (DPO).
The user turn must hold the question, the reasoning and the answer, tagged as the app writes them
(`<question>` / `<reasoning>` / `<answer>`, `<thinking>` or `<think>` also read) or as labelled sections
(`Question:` / `Thinking:` or `Reasoning:` / `Answer:` or `Response:`). A file's system prompt is not kept: rounds
train with the app's protocol prompt. Every target must read as `Analysis … Judgment 0 | 0.5 | 1`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from annotation.formats import RecordError, decode_utf8, json_list_objects, jsonl_objects
from guardmodel import protocol
from training.formats import PAIR_STAGES

_TAGS = {
    "question": ("question",),
    "thinking": ("reasoning", "thinking", "think"),
    "answer": ("answer", "response"),
}
_LABELS = {
    "question": ("question", "user question", "query"),
    "thinking": ("thinking", "reasoning", "reasoning process", "thinking process", "reasoning trace"),
    "answer": ("answer", "response", "final answer", "model response"),
}
_LABEL_LINE = re.compile(
    r"^[ \t]*(?:\*\*|#+[ \t]*)?(" + "|".join(sorted({n for ns in _LABELS.values() for n in ns}, key=len, reverse=True))
    + r")(?:\*\*)?[ \t]*:[ \t]*(?:\*\*)?",
    re.IGNORECASE | re.MULTILINE,
)  # fmt: skip
_IMAGE_TAG = re.compile(r"<image>")


class _Invalid(Exception):
    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(reason)
        self.field, self.reason = field_name, reason


@dataclass
class Row:
    line: int
    question: str
    thinking: str
    answer: str
    image: str | None  # the path the file gives, relative to its images folder or archive
    fmt: str
    targets: dict[str, str] = field(default_factory=dict)  # target (SFT) or chosen / rejected (pairs)
    judgments: dict[str, float] = field(default_factory=dict)


def split_user_text(text: str) -> tuple[str, str, str]:
    """The question, reasoning and answer in a user turn, tagged or labelled; raises _Invalid when not found."""
    text = _IMAGE_TAG.sub("", text).strip()
    found: dict[str, str] = {}
    for part, names in _TAGS.items():
        for name in names:
            match = re.search(rf"<{name}>\s*(.*?)\s*</{name}>", text, re.DOTALL | re.IGNORECASE)
            if match:
                found[part] = match.group(1)
                break
    if len(found) < 3:
        found = {}
        marks = list(_LABEL_LINE.finditer(text))
        for i, mark in enumerate(marks):
            name = mark.group(1).lower()
            part = next(p for p, names in _LABELS.items() if name in names)
            end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
            found.setdefault(part, text[mark.end() : end].strip())
    missing = [part for part in ("question", "thinking", "answer") if part not in found]
    if missing:
        raise _Invalid(
            "user turn",
            f"no {' / '.join('reasoning' if part == 'thinking' else part for part in missing)} section: tag them <question>, <reasoning>, <answer> (or label them "
            f"Question:, Thinking:, Answer:); the turn begins {text[:60]!r}",
        )
    if not found["question"].strip() or not found["answer"].strip():
        raise _Invalid("user turn", "the question and the answer must not be empty")
    return found["question"], found["thinking"], found["answer"]


def _content_text(content: Any, where: str) -> tuple[str, int]:
    """A message content's text and how many image parts it holds."""
    if isinstance(content, str):
        return content, len(_IMAGE_TAG.findall(content))
    if isinstance(content, list):
        texts, images = [], 0
        for part in content:
            if not isinstance(part, dict) or part.get("type") not in {"text", "image", "image_url"}:
                raise _Invalid(where, "content parts must be {'type': 'text' | 'image', …} objects")
            if part["type"] == "text":
                texts.append(str(part.get("text", "")))
            else:
                images += 1
        text = "\n".join(texts)
        return text, images + len(_IMAGE_TAG.findall(text))
    raise _Invalid(where, f"expected a string or a list of parts, got {type(content).__name__}")


def _turns(messages: Any, where: str) -> list[tuple[str, Any]]:
    if isinstance(messages, str):
        return [("user", messages)]
    if not isinstance(messages, list) or not messages:
        raise _Invalid(where, "expected a non-empty list of turns")
    turns = []
    for i, turn in enumerate(messages):
        if not isinstance(turn, dict):
            raise _Invalid(f"{where}[{i}]", "expected an object with role/content or from/value")
        role = str(turn.get("role", turn.get("from")))
        content = turn.get("content", turn.get("value"))
        role = {"human": "user", "gpt": "assistant", "observation": "tool"}.get(role, role)
        if role not in {"system", "user", "assistant"}:
            raise _Invalid(f"{where}[{i}]", f"role {role!r} is not system, user or assistant")
        turns.append((role, content))
    return turns


def _reply(value: Any, where: str) -> str:
    if isinstance(value, dict):
        value = value.get("content", value.get("value"))
    elif isinstance(value, list):
        replies = [content for role, content in _turns(value, where) if role == "assistant"]
        if len(replies) != 1:
            raise _Invalid(where, "expected exactly one assistant turn")
        value = replies[0]
    text, _ = _content_text(value, where)
    return text


def _target(text: str, where: str) -> tuple[str, float]:
    parsed = protocol.parse_output(text)
    if parsed.judgment is None:
        raise _Invalid(where, f"no Judgment of 0, 0.5 or 1 can be read from {text[:60]!r}")
    return protocol.format_target(analysis=parsed.analysis, judgment=parsed.judgment), parsed.judgment


def _images(obj: dict, counted: int) -> str | None:
    images = obj.get("images", [])
    if isinstance(images, str):
        images = [images]
    if not isinstance(images, list) or not all(isinstance(i, str) and i.strip() for i in images):
        raise _Invalid("images", "expected a list of relative image paths")
    if len(images) > 1:
        raise _Invalid("images", f"{len(images)} images in one row: a QTA sample has at most one")
    if counted > 1:
        raise _Invalid("user turn", f"{counted} image placeholders: a QTA sample has at most one")
    if images and counted == 0 and "conversations" in obj:
        raise _Invalid("user turn", "the row has an image but its user turn has no <image> placeholder")
    return images[0] if images else None


def row_from_dict(obj: Any, line: int, stage: str) -> Row:
    if not isinstance(obj, dict):
        raise _Invalid("", f"expected a JSON object, got {type(obj).__name__}")
    pairs = stage in PAIR_STAGES
    targets: dict[str, str] = {}
    if "question" in obj:
        fmt = "release"
        for key in ("question", "response" if "response" in obj else "answer"):
            if not isinstance(obj.get(key), str):
                raise _Invalid(key, "expected a string")
        question, thinking = obj["question"], obj.get("thinking") or ""
        answer = str(obj["response" if "response" in obj else "answer"])
        if not isinstance(thinking, str):
            raise _Invalid("thinking", "expected a string")
        image = obj.get("image_name", obj.get("image"))
        if image is not None and (not isinstance(image, str) or not image.strip()):
            raise _Invalid("image_name", "expected a relative path string or null")
        keys = ("chosen", "rejected") if pairs else ("output",)
        for key in keys:
            if not isinstance(obj.get(key), str | dict | list):
                raise _Invalid(key, f"missing: a {'DPO' if pairs else 'SFT'} row needs {' and '.join(keys)}")
            targets[key] = _reply(obj[key], key)
    else:
        fmt, key = (
            ("sharegpt", "conversations") if "conversations" in obj
            else ("sharegpt", "messages") if "messages" in obj
            else ("trl", "prompt") if "prompt" in obj
            else ("", "")
        )  # fmt: skip
        if not fmt:
            raise _Invalid("", "not a training row: expected conversations, messages, prompt or question")
        turns = _turns(obj[key], key)
        users = [(i, content) for i, (role, content) in enumerate(turns) if role == "user"]
        if len(users) != 1:
            raise _Invalid(key, f"expected one user turn, found {len(users)}")
        user_text, counted = _content_text(users[0][1], f"{key}[{users[0][0]}]")
        question, thinking, answer = split_user_text(user_text)
        image = _images(obj, counted)
        replies = [content for role, content in turns if role == "assistant"]
        if pairs:
            for side in ("chosen", "rejected"):
                if side not in obj:
                    raise _Invalid(side, "missing: a DPO row needs chosen and rejected")
                targets[side] = _reply(obj[side], side)
        elif fmt == "trl":
            if "completion" not in obj:
                raise _Invalid("completion", "missing: a TRL SFT row needs a completion")
            targets["output"] = _reply(obj["completion"], "completion")
        else:
            if len(replies) != 1:
                raise _Invalid(
                    key, f"an SFT row needs one assistant turn after the user's, found {len(replies)}"
                )
            targets["output"] = _content_text(replies[0], key)[0]
    row = Row(line, question, thinking, answer, image, fmt)
    for key, text in targets.items():
        name = "target" if key == "output" else key
        row.targets[name], row.judgments[name] = _target(text, key)
    if (
        pairs
        and row.judgments["chosen"] == row.judgments["rejected"]
        and row.targets["chosen"] == row.targets["rejected"]
    ):
        raise _Invalid("rejected", "the rejected answer is the chosen one")
    return row


def parse_training_file(data: bytes, *, name: str, stage: str) -> Iterator[Row | RecordError]:
    """Each row of the file as a Row, or a RecordError saying what is wrong and where (file, line, field)."""
    text = decode_utf8(data, name)
    if isinstance(text, RecordError):
        yield text
        return
    objects = json_list_objects(text, name) if text.lstrip().startswith("[") else jsonl_objects(text, name)
    for line, obj, error in objects:
        if error is not None:
            yield error
            continue
        try:
            yield row_from_dict(obj, line, stage)
        except _Invalid as exc:
            yield RecordError(name, line, exc.field, exc.reason)
