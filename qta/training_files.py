"""Reading training files made elsewhere — the GuardTrace-VL release's SFT / DPO files, LLaMA-Factory sharegpt or
alpaca, TRL conversational — into snapshot records (no database here; `datasets.snapshot_import` stores them).

Accepted row shapes (a JSON list, or JSON Lines):
- LLaMA-Factory sharegpt: `conversations` ({from, value}) or `messages` ({role, content}), `images`; an SFT row ends
  with the assistant's turn, a DPO row has `chosen` / `rejected` (a turn or a string);
- LLaMA-Factory alpaca: `instruction` (+ `input`) as the user turn, `output` (SFT) or `chosen` / `rejected`;
- TRL conversational: `prompt` (messages or a string) with `completion` (SFT) or `chosen` / `rejected` (DPO),
  `images`; or, for pairs, `chosen` / `rejected` as whole conversations sharing their user turn (implicit prompt).
  Message contents may be strings or lists of `{"type": "text" | "image"}` parts; an image part may carry its path
  (`image`, `path`, `url`, `image_url`) when the row has no `images`;
- the release's plain rows: `question`, `thinking`, `response` (or `answer`), `image_name` (or `image`, `images`),
  with `output` (SFT) or `chosen` / `rejected` (DPO).
An empty image path, or an empty list, means no image. Image paths are relative to the images folder or zip the user
gives (`qta.images` finds `sft_images/a.png` when given the folder `sft_images` itself).
The user turn must hold the question, the reasoning and the answer: in the release's layout (the image part first,
then one text part `Current Task Query: …` / `Current Task Thinking: …` / `Current Task Cleaned Response: …`), tagged
as the app writes them (`<question>` / `<reasoning>` / `<answer>`, `<thinking>` or `<think>` also read) or as
labelled sections (`Question:` / `Thinking:` or `Reasoning:` / `Answer:` or `Response:`). The release's stand-ins for
a missing field (`No question provided`, `No thinking provided`, `No response provided`) read as empty; a row needs at
least one of the three. A file's system prompt is not kept: a round trains with its base checkpoint's prompt template
(add the release's prompt file as a template to train in its words and layout). Every target must read as
`Analysis … Judgment 0 | 0.5 | 1` (`protocol.parse_output`: the release's `“Analysis”: … “Judgment”: [1]` too).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from qta import protocol
from qta.sample_files import RecordError, decode_utf8, json_list_objects, jsonl_objects
from qta.training_records import PAIR_STAGES

_PARTS = ("question", "thinking", "answer")
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
# The release's layout: its three labels at line starts ("Cleaned Response" or plain "Response" for the answer).
_RELEASE_LINE = re.compile(
    r"^[ \t]*(?:\*\*)?Current[ \t]+Task[ \t]+(Query|Thinking|(?:Cleaned[ \t]+)?Response)(?:\*\*)?[ \t]*:[ \t]*",
    re.IGNORECASE | re.MULTILINE,
)
_RELEASE_PART = {"query": "question", "thinking": "thinking", "response": "answer"}
# "No question provided", "No thinking provided", "No response provided": the release's stand-in for a missing field.
_MISSING = {f"no {word} provided" for word in (*protocol.RELEASE_MISSING.values(), "answer", "reasoning")}
_IMAGE_TAG = re.compile(r"<image>")
_ROLES = {"human": "user", "gpt": "assistant", "observation": "tool"}


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
    image_field: str = "images"  # where the row names its image, for errors


@dataclass
class _Content:
    """A message content's text, how many image parts or `<image>` tags it holds, and the paths parts carry."""

    text: str
    images: int = 0
    paths: list[str] = field(default_factory=list)


def _missing_as_empty(value: str) -> str:
    return "" if value.strip().rstrip(".").lower() in _MISSING else value


def _checked_parts(question: str, thinking: str, answer: str, where: str) -> tuple[str, str, str]:
    parts = tuple(_missing_as_empty(value) for value in (question, thinking, answer))
    if not any(value.strip() for value in parts):
        raise _Invalid(where, "the question, the reasoning and the answer are all empty")
    return parts  # type: ignore[return-value]


def _release_layout(text: str) -> dict[str, str] | None:
    """The three parts of a `Current Task …:` user turn (text before the query, the prompt's own, is dropped), or
    None when the three labels are not there in order."""
    marks = list(_RELEASE_LINE.finditer(text))
    if not marks:
        return None
    order = [_RELEASE_PART[re.sub(r"\s+", " ", mark.group(1).lower()).split()[-1]] for mark in marks]
    # The first query, the first thinking after it, the first response after that: a trace may quote anything.
    picked, wanted = [], iter(_PARTS)
    want = next(wanted)
    for index, part in enumerate(order):
        if part == want:
            picked.append(index)
            want = next(wanted, "")
    if len(picked) < 3:
        return None
    q, t, a = (marks[i] for i in picked)
    return {
        "question": text[q.end() : t.start()].strip(),
        "thinking": text[t.end() : a.start()].strip(),
        "answer": text[a.end() :].strip(),
    }


def _tagged_or_labelled(text: str) -> dict[str, str]:
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
    return found


def split_user_text(text: str) -> tuple[str, str, str]:
    """The question, reasoning and answer in a user turn (release layout, tagged or labelled); raises _Invalid when
    they are not found or all empty."""
    text = _IMAGE_TAG.sub("", text).strip()
    found = _release_layout(text) or _tagged_or_labelled(text)
    missing = [part for part in _PARTS if part not in found]
    if missing and _RELEASE_LINE.search(text):
        labels = ", ".join(f"{protocol.RELEASE_LABELS[p]}:" for p in _PARTS)
        raise _Invalid(
            "user turn", f"the release layout needs {labels} in that order, each at the start of a line"
        )
    if missing:
        raise _Invalid(
            "user turn",
            f"no {' / '.join('reasoning' if part == 'thinking' else part for part in missing)} section: lay them "
            "out as the release does (Current Task Query:, Current Task Thinking:, Current Task Cleaned Response:), "
            f"tag them <question>, <reasoning>, <answer> or label them Question:, Thinking:, Answer:; the turn begins "
            f"{text[:60]!r}",
        )
    return _checked_parts(found["question"], found["thinking"], found["answer"], "user turn")


def _image_part_path(part: dict, where: str) -> str | None:
    for key in ("image", "path", "url", "image_url"):
        value = part.get(key)
        if isinstance(value, dict):
            value = value.get("url")
        if isinstance(value, str) and value.strip():
            if value.startswith(("http://", "https://", "data:")):
                raise _Invalid(where, "an image part must name a file in the images folder or zip, not a URL")
            return value
    return None


def _content(content: Any, where: str) -> _Content:
    if isinstance(content, str):
        return _Content(content, len(_IMAGE_TAG.findall(content)))
    if isinstance(content, list):
        texts, images, paths = [], 0, []
        for part in content:
            if not isinstance(part, dict) or part.get("type") not in {"text", "image", "image_url"}:
                raise _Invalid(where, "content parts must be {'type': 'text' | 'image', …} objects")
            if part["type"] == "text":
                texts.append(str(part.get("text", "")))
                continue
            images += 1
            if (path := _image_part_path(part, where)) is not None:
                paths.append(path)
        text = "\n".join(texts)
        return _Content(text, images + len(_IMAGE_TAG.findall(text)), paths)
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
        role = _ROLES.get(role, role)
        if role not in {"system", "user", "assistant"}:
            raise _Invalid(f"{where}[{i}]", f"role {role!r} is not system, user or assistant")
        turns.append((role, turn.get("content", turn.get("value"))))
    return turns


def _reply(value: Any, where: str) -> str:
    if isinstance(value, dict):
        value = value.get("content", value.get("value"))
    elif isinstance(value, list):
        replies = [content for role, content in _turns(value, where) if role == "assistant"]
        if len(replies) != 1:
            raise _Invalid(where, "expected exactly one assistant turn")
        value = replies[0]
    return _content(value, where).text


def _target(text: str, where: str) -> tuple[str, float]:
    parsed = protocol.parse_output(text)
    if parsed.judgment is None:
        raise _Invalid(where, f"no Judgment of 0, 0.5 or 1 can be read from {text[:60]!r}")
    return protocol.format_target(analysis=parsed.analysis, judgment=parsed.judgment), parsed.judgment


def _image_list(obj: dict, key: str) -> list[str]:
    images = obj.get(key)
    if images is None:
        return []
    if isinstance(images, str):
        images = [images]
    if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
        raise _Invalid(key, "expected a relative image path or a list of them")
    # An empty path is no image, as an empty list is.
    images = [image for image in images if image.strip()]
    if len(images) > 1:
        raise _Invalid(key, f"{len(images)} images in one row: a QTA sample has at most one")
    return images


def _chat_image(obj: dict, user: _Content, fmt_key: str) -> str | None:
    images = _image_list(obj, "images") or user.paths
    if len(images) > 1:
        raise _Invalid("user turn", f"{len(images)} images in one row: a QTA sample has at most one")
    if user.images > 1:
        raise _Invalid("user turn", f"{user.images} image placeholders: a QTA sample has at most one")
    if images and user.images == 0 and fmt_key == "conversations":
        raise _Invalid("user turn", "the row has an image but its user turn has no <image> placeholder")
    if user.images and not images:
        raise _Invalid("images", "the user turn has an image part but the row names no image file")
    return images[0] if images else None


# What a row teaches: {"target": …} (SFT) or {"chosen": …, "rejected": …}, each (text, the field it came from).
_Targets = dict[str, tuple[str, str]]


def _sides(obj: dict, pairs: bool, sft_key: str, sft_name: str) -> _Targets:
    """The row's target texts: chosen / rejected for pairs, else the SFT answer under `sft_key`."""
    keys = ("chosen", "rejected") if pairs else (sft_key,)
    targets = {}
    for key in keys:
        if key not in obj or not isinstance(obj[key], str | dict | list):
            need = "chosen and rejected" if pairs else sft_key
            raise _Invalid(key, f"missing: a {'DPO' if pairs else sft_name} row needs {need}")
        targets["target" if key == sft_key else key] = (_reply(obj[key], key), key)
    return targets


def _plain_row(obj: dict, line: int, pairs: bool) -> tuple[Row, _Targets]:
    answer_key = "response" if "response" in obj else "answer"
    for key in ("question", answer_key):
        if not isinstance(obj.get(key), str):
            raise _Invalid(key, "expected a string")
    thinking = obj.get("thinking") or ""
    if not isinstance(thinking, str):
        raise _Invalid("thinking", "expected a string")
    question, thinking, answer = _checked_parts(obj["question"], thinking, obj[answer_key], "question")
    key = next((k for k in ("image_name", "image", "images") if k in obj), "image_name")
    images = _image_list(obj, key)
    row = Row(line, question, thinking, answer, images[0] if images else None, "release", image_field=key)
    return row, _sides(obj, pairs, "output", "SFT")


def _alpaca_row(obj: dict, line: int, pairs: bool) -> tuple[Row, _Targets]:
    instruction, extra = obj.get("instruction"), obj.get("input") or ""
    if not isinstance(instruction, str) or not isinstance(extra, str):
        raise _Invalid("instruction", "expected instruction (and input) strings")
    text = "\n".join(part for part in (instruction, extra) if part)
    user = _Content(text, len(_IMAGE_TAG.findall(text)))
    question, thinking, answer = split_user_text(user.text)
    image = _chat_image(obj, user, "instruction")
    return Row(line, question, thinking, answer, image, "alpaca"), _sides(obj, pairs, "output", "SFT")


def _implicit_prompt(obj: dict) -> tuple[list[tuple[str, Any]], _Targets]:
    """TRL's implicit-prompt pairs: chosen and rejected are whole conversations that share their user turn."""
    chosen, rejected = _turns(obj["chosen"], "chosen"), _turns(obj.get("rejected"), "rejected")
    prompt = [turn for turn in chosen if turn[0] != "assistant"]
    if [turn for turn in rejected if turn[0] != "assistant"] != prompt:
        raise _Invalid("rejected", "its user turn differs from the chosen conversation's")
    return prompt, {side: (_reply(obj[side], side), side) for side in ("chosen", "rejected")}


def _chat_row(obj: dict, line: int, pairs: bool) -> tuple[Row, _Targets]:
    fmt, key = (
        ("sharegpt", "conversations") if "conversations" in obj
        else ("sharegpt", "messages") if "messages" in obj
        else ("trl", "prompt") if "prompt" in obj
        else ("trl", "chosen") if pairs and isinstance(obj.get("chosen"), list)
        else ("", "")
    )  # fmt: skip
    if not fmt:
        raise _Invalid(
            "", "not a training row: expected conversations, messages, prompt, instruction or question"
        )
    implicit: _Targets = {}
    turns = _turns(obj[key], key) if key != "chosen" else None
    if turns is None:
        turns, implicit = _implicit_prompt(obj)
    users = [(i, content) for i, (role, content) in enumerate(turns) if role == "user"]
    if len(users) != 1:
        raise _Invalid(key, f"expected one user turn, found {len(users)}")
    user = _content(users[0][1], f"{key}[{users[0][0]}]")
    question, thinking, answer = split_user_text(user.text)
    row = Row(line, question, thinking, answer, _chat_image(obj, user, key), fmt)
    if implicit:
        return row, implicit
    if pairs or fmt == "trl":
        return row, _sides(obj, pairs, "completion", "TRL SFT")
    replies = [content for role, content in turns if role == "assistant"]
    if len(replies) != 1:
        raise _Invalid(key, f"an SFT row needs one assistant turn after the user's, found {len(replies)}")
    return row, {"target": (_content(replies[0], key).text, key)}


def row_from_dict(obj: Any, line: int, stage: str) -> Row:
    if not isinstance(obj, dict):
        raise _Invalid("", f"expected a JSON object, got {type(obj).__name__}")
    pairs = stage in PAIR_STAGES
    if "question" in obj:
        row, targets = _plain_row(obj, line, pairs)
    elif "instruction" in obj:
        row, targets = _alpaca_row(obj, line, pairs)
    else:
        row, targets = _chat_row(obj, line, pairs)
    for name, (text, where) in targets.items():
        row.targets[name], row.judgments[name] = _target(text, where)
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
