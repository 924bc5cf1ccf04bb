"""Reading QTA files into validated records (no database here).

Two formats:
- `jsonl`: ours, one sample per line (the format `export_qta` writes);
- `guardtrace`: the GuardTrace-VL release, a JSON list of objects with `image_name`, `question`, `thinking`,
  `response` and `evaluation_result`.
An empty or missing image path means a text-only sample. `split`, `subset` and `source_dataset` may be given for the
whole file (`FileDefaults`); a row's own value wins. Every problem becomes a `RecordError` naming the file, the line
and the field.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from qta.protocol import JUDGMENTS, RISK_CATEGORIES, coerce_judgment, parse_output

FORMATS = ("jsonl", "guardtrace")
SPLITS = ("train", "test")
CATEGORIES = tuple(value for value, _ in RISK_CATEGORIES)
VARIANTS = ("text_only", "irrelevant_image", "aligned_image", "typographic", "hades", "cs_dj", "other")
SOURCE_KINDS = ("juror", "expert", "guard", "oracle", "imported")
LABEL_STATUSES = ("valid", "invalid", "failed")
DEFAULT_LABEL_SOURCE = "ground_truth"

_SHORT_FIELDS = {"subset": 64, "source_dataset": 100, "generator_model": 200, "external_id": 200}
# Written by export_qta for the reader's benefit; recomputed on import, so ignored there.
_DERIVED_FIELDS = {"id", "content_hash", "stratum", "final_label", "final_label_origin", "created_at"}
_JSONL_FIELDS = (
    {"question", "thinking", "answer", "image", "split", "category", "input_variant", "label", "label_source"}
    | {"analysis", "labels", "provenance"}
    | set(_SHORT_FIELDS)
    | _DERIVED_FIELDS
)


@dataclass(frozen=True)
class RecordError:
    file: str
    line: int
    field: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.field}: {self.reason}" if self.field else f"{where}: {self.reason}"


@dataclass
class LabelRecord:
    source_kind: str
    source_name: str
    judgment: float | None
    prompt_version: str = ""
    analysis: str = ""
    raw_output: str = ""
    status: str = "valid"
    latency_ms: float | None = None
    created_at: datetime | None = None


@dataclass
class SampleRecord:
    line: int
    question: str
    thinking: str
    answer: str
    image: str | None = None
    subset: str = ""
    split: str = "train"
    category: str = "other"
    input_variant: str = ""
    source_dataset: str = ""
    generator_model: str = ""
    external_id: str = ""
    provenance: dict = field(default_factory=dict)
    labels: list[LabelRecord] = field(default_factory=list)


@dataclass(frozen=True)
class FileDefaults:
    """Values for every row of a file that does not give its own (`file_defaults` checks them)."""

    split: str = ""
    subset: str = ""
    source_dataset: str = ""


NO_DEFAULTS = FileDefaults()


class DefaultsRejected(ValueError):
    """A file-wide value is not acceptable; `field` names it."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def file_defaults(*, split: str = "", subset: str = "", source_dataset: str = "") -> FileDefaults:
    """The file-wide values, checked as a row's own are; raises DefaultsRejected naming the first bad one."""
    try:
        return FileDefaults(
            split=_choice({"split": split}, "split", SPLITS, ""),
            **{  # type: ignore[arg-type]
                key: _text(
                    {key: value}, key, required=False, allow_empty=True, max_chars=_SHORT_FIELDS[key]
                ).strip()
                for key, value in (("subset", subset), ("source_dataset", source_dataset))
            },
        )
    except _Invalid as exc:
        raise DefaultsRejected(exc.field, exc.reason) from None


class _Invalid(Exception):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


def _text(obj: dict, key: str, *, required: bool, allow_empty: bool, max_chars: int, where: str = "") -> str:
    name = f"{where}{key}"
    if key not in obj or obj[key] is None:
        if required:
            raise _Invalid(name, "required field is missing")
        return ""
    value = obj[key]
    if not isinstance(value, str):
        raise _Invalid(name, f"expected a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise _Invalid(name, "must not be empty")
    if len(value) > max_chars:
        raise _Invalid(name, f"is {len(value):,} characters long, over the {max_chars:,}-character limit")
    if "\x00" in value:
        raise _Invalid(name, "contains a NUL character")
    return value


def _choice(obj: dict, key: str, allowed: tuple[str, ...], default: str) -> str:
    value = obj.get(key)
    if value is None or value == "":
        return default
    if not isinstance(value, str):
        raise _Invalid(key, f"expected a string, got {type(value).__name__}")
    normalised = value.strip().lower().replace("-", "_").replace(" ", "_")
    if normalised not in allowed:
        raise _Invalid(key, f"unknown value {value!r}; expected one of {', '.join(allowed)}")
    return normalised


def _judgment(value: Any, field_name: str) -> float:
    judgment = coerce_judgment(value)
    if judgment is None:
        raise _Invalid(
            field_name, f"judgment {value!r} is not one of {', '.join(f'{j:g}' for j in JUDGMENTS)}"
        )
    return judgment


def _label_record(obj: Any, index: int, max_chars: int) -> LabelRecord:
    where = f"labels[{index}]."
    if not isinstance(obj, dict):
        raise _Invalid(f"labels[{index}]", f"expected an object, got {type(obj).__name__}")
    kind = obj.get("source_kind")
    if kind not in SOURCE_KINDS:
        raise _Invalid(
            f"{where}source_kind", f"unknown value {kind!r}; expected one of {', '.join(SOURCE_KINDS)}"
        )
    status = obj.get("status", "valid")
    if status not in LABEL_STATUSES:
        raise _Invalid(
            f"{where}status", f"unknown value {status!r}; expected one of {', '.join(LABEL_STATUSES)}"
        )
    raw_judgment = obj.get("judgment")
    if status == "valid":
        judgment: float | None = _judgment(raw_judgment, f"{where}judgment")
    elif raw_judgment is not None:
        raise _Invalid(f"{where}judgment", f"must be null for a label with status {status!r}")
    else:
        judgment = None
    latency = obj.get("latency_ms")
    if latency is not None and (
        isinstance(latency, bool) or not isinstance(latency, int | float) or latency < 0
    ):
        raise _Invalid(f"{where}latency_ms", f"expected a non-negative number, got {latency!r}")
    created_at = obj.get("created_at")
    parsed_at = None
    if created_at is not None:
        try:
            parsed_at = datetime.fromisoformat(created_at)
        except (TypeError, ValueError):
            raise _Invalid(
                f"{where}created_at", f"expected an ISO 8601 timestamp, got {created_at!r}"
            ) from None
    return LabelRecord(
        source_kind=kind,
        source_name=_text(obj, "source_name", required=True, allow_empty=False, max_chars=100, where=where),
        prompt_version=_text(
            obj, "prompt_version", required=False, allow_empty=True, max_chars=32, where=where
        ),
        analysis=_text(obj, "analysis", required=False, allow_empty=True, max_chars=max_chars, where=where),
        raw_output=_text(
            obj, "raw_output", required=False, allow_empty=True, max_chars=max_chars, where=where
        ),
        judgment=judgment,
        status=status,
        latency_ms=None if latency is None else float(latency),
        created_at=parsed_at,
    )


def _image_path(obj: dict, key: str) -> str | None:
    """The row's image path; missing, null or empty means no image."""
    image = obj.get(key)
    if image is None or isinstance(image, str) and not image.strip():
        return None
    if not isinstance(image, str):
        raise _Invalid(key, f"expected a relative path string or null, got {type(image).__name__}")
    return image


def _short_fields(obj: dict, defaults: FileDefaults) -> dict[str, str]:
    values = {
        key: _text(obj, key, required=False, allow_empty=True, max_chars=n)
        for key, n in _SHORT_FIELDS.items()
    }
    for key in ("subset", "source_dataset"):
        values[key] = values[key] or getattr(defaults, key)
    return values


def record_from_dict(
    obj: Any, line: int, *, max_chars: int, defaults: FileDefaults = NO_DEFAULTS
) -> SampleRecord:
    """One of our JSONL objects as a SampleRecord; raises _Invalid naming the first bad field."""
    if not isinstance(obj, dict):
        raise _Invalid("", f"expected a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - _JSONL_FIELDS)
    if unknown:
        raise _Invalid(unknown[0], "unknown field")
    image = _image_path(obj, "image")
    record = SampleRecord(
        line=line,
        question=_text(obj, "question", required=True, allow_empty=False, max_chars=max_chars),
        thinking=_text(obj, "thinking", required=True, allow_empty=True, max_chars=max_chars),
        answer=_text(obj, "answer", required=True, allow_empty=False, max_chars=max_chars),
        image=image,
        split=_choice(obj, "split", SPLITS, defaults.split or "train"),
        category=_choice(obj, "category", CATEGORIES, "other"),
        input_variant=_choice(obj, "input_variant", VARIANTS, "other" if image else "text_only"),
        **_short_fields(obj, defaults),  # type: ignore[arg-type]
    )
    provenance = obj.get("provenance")
    if provenance is not None:
        if not isinstance(provenance, dict):
            raise _Invalid("provenance", f"expected an object, got {type(provenance).__name__}")
        if len(json.dumps(provenance)) > max_chars:
            raise _Invalid("provenance", f"over {max_chars:,} characters")
        record.provenance = provenance
    labels = obj.get("labels")
    if labels is not None:
        if not isinstance(labels, list):
            raise _Invalid("labels", f"expected a list, got {type(labels).__name__}")
        record.labels = [_label_record(item, i, max_chars) for i, item in enumerate(labels)]
    if obj.get("label") is not None:
        record.labels.append(
            LabelRecord(
                source_kind="imported",
                source_name=_text(obj, "label_source", required=False, allow_empty=True, max_chars=100)
                or DEFAULT_LABEL_SOURCE,
                judgment=_judgment(obj["label"], "label"),
                analysis=_text(obj, "analysis", required=False, allow_empty=True, max_chars=max_chars),
            )
        )
    seen: set[tuple[str, str, str]] = set()
    for index, label in enumerate(record.labels):
        key = (label.source_kind, label.source_name, label.prompt_version)
        if key in seen:
            raise _Invalid(f"labels[{index}]", f"second label from the same source {key}")
        seen.add(key)
    return record


def _guardtrace_record(
    obj: Any, line: int, *, max_chars: int, source: str, defaults: FileDefaults = NO_DEFAULTS
) -> SampleRecord:
    if not isinstance(obj, dict):
        raise _Invalid("", f"expected a JSON object, got {type(obj).__name__}")
    image = _image_path(obj, "image_name" if "image_name" in obj else "image")
    record = SampleRecord(
        line=line,
        question=_text(obj, "question", required=True, allow_empty=False, max_chars=max_chars),
        thinking=_text(obj, "thinking", required=True, allow_empty=True, max_chars=max_chars),
        answer=_text(obj, "response", required=True, allow_empty=False, max_chars=max_chars),
        image=image,
        split=_choice(obj, "split", SPLITS, defaults.split or "train"),
        category=_choice(obj, "category", CATEGORIES, "other"),
        input_variant="other" if image else "text_only",
        subset=_text(obj, "subset", required=False, allow_empty=True, max_chars=64) or defaults.subset,
        source_dataset=_text(obj, "source_dataset", required=False, allow_empty=True, max_chars=100)
        or defaults.source_dataset
        or "GuardTrace-VL",
        external_id=str(obj.get("id", "") or "")[:200],
    )
    result = obj.get("evaluation_result")
    if result is not None:
        record.labels.append(_evaluation_label(result, max_chars=max_chars, source=source))
    return record


def _evaluation_label(result: Any, *, max_chars: int, source: str) -> LabelRecord:
    """`evaluation_result` as a number, a numeric string, `Analysis … Judgment …` text or {analysis, judgment}."""
    if isinstance(result, dict):
        analysis = _text(result, "analysis", required=False, allow_empty=True, max_chars=max_chars)
        judgment = _judgment(result.get("judgment"), "evaluation_result.judgment")
        return LabelRecord("imported", source, judgment, analysis=analysis)
    if coerce_judgment(result) is not None:
        return LabelRecord("imported", source, coerce_judgment(result))
    if isinstance(result, str):
        parsed = parse_output(result)
        if parsed.judgment is None:
            raise _Invalid("evaluation_result", "no judgment of 0, 0.5 or 1 can be read from the text")
        return LabelRecord("imported", source, parsed.judgment, analysis=parsed.analysis, raw_output=result)
    raise _Invalid("evaluation_result", f"judgment {result!r} is not one of 0, 0.5, 1")


def jsonl_objects(text: str, name: str) -> Iterator[tuple[int, Any, RecordError | None]]:
    # Only "\n" ends a line: str.splitlines() would also split on U+2028, U+0085 and others, which JSON
    # written with ensure_ascii=False leaves raw inside strings.
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.removesuffix("\r")
        if not line.strip():
            continue
        try:
            yield number, json.loads(line), None
        except json.JSONDecodeError as exc:
            yield (
                number,
                None,
                RecordError(name, number, "", f"malformed JSON: {exc.msg} at column {exc.colno}"),
            )


def json_list_objects(text: str, name: str) -> Iterator[tuple[int, Any, RecordError | None]]:
    """Elements of a top-level JSON list, each with the line it starts on."""
    decoder = json.JSONDecoder()
    # Lines are counted from where the last count stopped: counting from the start each time is quadratic.
    counted_to, line = 0, 1

    def line_at(position: int) -> int:
        nonlocal counted_to, line
        line += text.count("\n", counted_to, position)
        counted_to = position
        return line

    index = len(text) - len(text.lstrip())
    if not text.startswith("[", index):
        yield line_at(index), None, RecordError(name, line_at(index), "", "expected a JSON list of objects")
        return
    index += 1
    while True:
        while index < len(text) and text[index] in " \t\r\n":
            index += 1
        if text.startswith("]", index):
            return
        start = line_at(index)
        try:
            obj, index = decoder.raw_decode(text, index)
        except json.JSONDecodeError as exc:
            yield (
                exc.lineno,
                None,
                RecordError(name, exc.lineno, "", f"malformed JSON: {exc.msg} at column {exc.colno}"),
            )
            return
        yield start, obj, None
        while index < len(text) and text[index] in " \t\r\n":
            index += 1
        if text.startswith(",", index):
            index += 1
        elif not text.startswith("]", index):
            yield (
                line_at(index),
                None,
                RecordError(name, line_at(index), "", "malformed JSON: expected ',' or ']' between objects"),
            )
            return


def decode_utf8(data: bytes, name: str) -> str | RecordError:
    """The file's text, or a RecordError naming the line of the first byte that is not UTF-8."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return RecordError(name, line, "", f"not valid UTF-8 text (byte {exc.start})")


def parse_records(
    data: bytes,
    *,
    name: str,
    fmt: str,
    max_chars: int,
    label_source: str = "guardtrace-vl",
    defaults: FileDefaults = NO_DEFAULTS,
) -> Iterator[SampleRecord | RecordError]:
    """Each sample in the file as a SampleRecord, or a RecordError saying what is wrong and where; `defaults` fill
    the split, subset and source dataset of rows that give none."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    text = decode_utf8(data, name)
    if isinstance(text, RecordError):
        yield text
        return
    objects = jsonl_objects(text, name) if fmt == "jsonl" else json_list_objects(text, name)
    for line, obj, error in objects:
        if error is not None:
            yield error
            continue
        try:
            if fmt == "jsonl":
                yield record_from_dict(obj, line, max_chars=max_chars, defaults=defaults)
            else:
                yield _guardtrace_record(
                    obj, line, max_chars=max_chars, source=label_source, defaults=defaults
                )
        except _Invalid as exc:
            yield RecordError(name, line, exc.field, exc.reason)


def guess_format(name: str) -> str:
    return "guardtrace" if name.lower().endswith(".json") else "jsonl"
