from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from qta.sample_files import RecordError, SampleRecord, parse_records

# Any text a model might write: HTML, quotes, emoji, right-to-left scripts, control characters (NUL excepted).
TEXT = st.text(
    alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=200
)


@settings(max_examples=150, deadline=None)
@given(
    question=TEXT.filter(str.strip),
    thinking=TEXT,
    answer=TEXT.filter(str.strip),
    judgment=st.sampled_from([0, 0.5, 1]),
)
def test_any_text_survives_a_jsonl_line_unchanged(question, thinking, answer, judgment):
    # As export writes it: raw UTF-8, so U+2028 or U+0085 inside a text must not end the line.
    line = json.dumps({"question": question, "thinking": thinking, "answer": answer, "label": judgment},
                      ensure_ascii=False)  # fmt: skip
    (parsed,) = list(parse_records(line.encode(), name="p.jsonl", fmt="jsonl", max_chars=10_000))
    assert isinstance(parsed, SampleRecord)
    assert (parsed.question, parsed.thinking, parsed.answer) == (question, thinking, answer)
    assert parsed.labels[0].judgment == float(judgment)


@settings(max_examples=100, deadline=None)
@given(garbage=st.binary(max_size=200))
def test_arbitrary_bytes_give_records_or_located_errors_never_a_crash(garbage):
    for item in parse_records(garbage, name="g.jsonl", fmt="jsonl", max_chars=10_000):
        assert isinstance(item, SampleRecord | RecordError)
        if isinstance(item, RecordError):
            assert str(item).startswith("g.jsonl:")
    for item in parse_records(garbage, name="g.json", fmt="guardtrace", max_chars=10_000):
        assert isinstance(item, SampleRecord | RecordError)
