"""Reading text seed queries (JSONL or CSV) into validated rows (no database here).

Fields: `text` (required), `category` (a risk category's value or its label; `other` when absent), `source`
(where the query comes from; the file's name when absent), `id` (optional, unique within the file); image+text pair
files (HADES, CS-DJ) also give `image`, a path relative to their images folder or zip. CSV files need a header row. Every problem becomes a `RecordError` naming the file, the line and the field.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass

from qta.protocol import RISK_CATEGORIES
from qta.sample_files import RecordError, decode_utf8, jsonl_objects

FIELDS = {"text", "category", "source", "id"}
MAX_TEXT = 20_000
_CATEGORY = {value: value for value, _ in RISK_CATEGORIES} | {
    label.lower(): value for value, label in RISK_CATEGORIES
}


@dataclass(frozen=True)
class SeedRow:
    line: int
    text: str
    category: str
    source: str
    external_id: str
    image: str | None = None


class _Invalid(Exception):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field, self.reason = field, reason


def seed_from_dict(obj: object, line: int, *, default_source: str, pairs: bool = False) -> SeedRow:
    if not isinstance(obj, dict):
        raise _Invalid("", f"expected an object with a text field, got {type(obj).__name__}")
    allowed = FIELDS | ({"image"} if pairs else set())
    if unknown := sorted(set(obj) - allowed):
        raise _Invalid(unknown[0], f"unknown field; expected {', '.join(sorted(allowed))}")
    image = obj.get("image")
    if pairs and (not isinstance(image, str) or not image.strip()):
        raise _Invalid("image", "required in a pair file: the image's path in the images folder or zip")
    text = obj.get("text")
    if not isinstance(text, str) or not text.strip():
        raise _Invalid("text", "required: the query's text")
    if len(text) > MAX_TEXT:
        raise _Invalid("text", f"{len(text):,} characters, over the {MAX_TEXT:,} limit")
    raw_category = obj.get("category") or "other"
    category = _CATEGORY.get(str(raw_category).strip().lower())
    if category is None:
        raise _Invalid("category", f"{raw_category!r} is not one of {', '.join(_CATEGORY_VALUES)}")
    source = obj.get("source") or default_source
    if not isinstance(source, str) or len(source) > 100:
        raise _Invalid("source", "expected a string of at most 100 characters")
    external = obj.get("id")
    if external is None:
        external = ""
    if not isinstance(external, str | int) or isinstance(external, bool) or len(str(external)) > 200:
        raise _Invalid("id", "expected a string or number of at most 200 characters")
    path = image.strip() if isinstance(image, str) and pairs else None
    return SeedRow(line, text.strip(), category, source.strip(), str(external).strip(), path)


_CATEGORY_VALUES = [value for value, _ in RISK_CATEGORIES]


def _csv_objects(
    text: str, name: str, column: str = "text"
) -> Iterator[tuple[int, object, RecordError | None]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames or column not in [f.strip() for f in reader.fieldnames]:
        yield 1, None, RecordError(name, 1, "", f"the CSV needs a header row with a {column} column")
        return
    try:
        for row in reader:
            if None in row:
                yield (
                    reader.line_num,
                    None,
                    RecordError(name, reader.line_num, "", "more cells than header columns"),
                )
                continue
            cleaned = {k.strip(): v for k, v in row.items() if v not in (None, "")}
            yield reader.line_num, cleaned, None
    except csv.Error as exc:
        yield reader.line_num, None, RecordError(name, reader.line_num, "", f"malformed CSV: {exc}")


def parse_seeds(
    data: bytes, *, name: str, fmt: str | None = None, pairs: bool = False
) -> Iterator[SeedRow | RecordError]:
    """Each query as a SeedRow, or a RecordError saying what is wrong and where; `fmt` jsonl or csv (by the name's
    extension when not given). A repeated id is reported on its second line."""
    fmt = fmt or ("csv" if name.lower().endswith(".csv") else "jsonl")
    if fmt not in ("jsonl", "csv"):
        raise ValueError(f"unknown format {fmt!r}; expected jsonl or csv")
    text = decode_utf8(data, name)
    if isinstance(text, RecordError):
        yield text
        return
    objects = jsonl_objects(text, name) if fmt == "jsonl" else _csv_objects(text, name)
    seen: dict[str, int] = {}
    for line, obj, error in objects:
        if error is not None:
            yield error
            continue
        try:
            row = seed_from_dict(obj, line, default_source=name, pairs=pairs)
        except _Invalid as exc:
            yield RecordError(name, line, exc.field, exc.reason)
            continue
        if row.external_id and row.external_id in seen:
            yield RecordError(
                name, line, "id", f"{row.external_id!r} is already used on line {seen[row.external_id]}"
            )
            continue
        if row.external_id:
            seen[row.external_id] = line
        yield row


def parse_captions(data: bytes, *, name: str) -> Iterator[tuple[int, str, str] | RecordError]:
    """An image pool's captions file — JSONL `{"image": path, "caption": text}` or CSV with `image` and `caption`
    columns — as (line, image path, caption), or a RecordError saying what is wrong and where."""
    text = decode_utf8(data, name)
    if isinstance(text, RecordError):
        yield text
        return
    csv_file = name.lower().endswith(".csv")
    for line, obj, error in _csv_objects(text, name, "image") if csv_file else jsonl_objects(text, name):
        if error is not None:
            yield error
        elif not isinstance(obj, dict):
            yield RecordError(
                name, line, "", f"expected an object with image and caption, got {type(obj).__name__}"
            )
        elif unknown := sorted(set(obj) - {"image", "caption"}):
            yield RecordError(name, line, unknown[0], "unknown field; expected image, caption")
        elif not isinstance(obj.get("image"), str) or not obj["image"].strip():
            yield RecordError(name, line, "image", "required: the image's path in the zip")
        elif not isinstance(obj.get("caption", ""), str):
            yield RecordError(name, line, "caption", "expected text")
        else:
            yield line, obj["image"].strip(), (obj.get("caption") or "").strip()
