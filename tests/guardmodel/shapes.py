"""Every output shape auditors are known to write, as templates the property tests and bench/parser.py fill in.

A shape is (analysis key, judgment key, separator, value, joiner); `render` writes one output and `json_output` the
JSON objects some models answer with. Analyses are drawn from words, so what the parser should give back is exact.
"""

from __future__ import annotations

import itertools
import json

from qta.protocol import format_judgment

ANALYSIS_KEYS = [
    "Analysis: ",
    "**Analysis:** ",
    "**Analysis**: ",
    "“Analysis”: ",
    '"Analysis": ',
    "## Analysis\n",
]
JUDGMENT_KEYS = [
    "Judgment", "**Judgment**", "“Judgment”", '"Judgment"', "'Judgment'", "Judgement", "JUDGMENT", "‘Judgment’",
]  # fmt: skip
SEPARATORS = [": ", ":", " = ", "：", ": \n"]
VALUES = ["{v}", "[{v}]", "({v})", '"{v}"', "“{v}”", "`{v}`", "**{v}**", "[“{v}”]"]
JOINERS = ["\n", "\n\n", ", ", " "]
CHATTER = ["", ".", "\n\nI hope this helps.", " — final.", "\nLet me know if you need more.", "\n```"]


def render(
    analysis: str, judgment: float, *, akey: str, jkey: str, sep: str, value: str, joiner: str, chatter: str
) -> str:
    shown = value.format(v=format_judgment(judgment))
    if jkey.startswith("**") and sep.startswith(":"):
        # Bold keys also appear with the colon inside the bold: **Judgment:** 1
        jkey, sep = jkey[:-2] + ":**", " "
    return f"{akey}{analysis}{joiner}{jkey}{sep}{shown}{chatter}"


def json_output(analysis: str, judgment: float, *, as_string: bool, fenced: bool, ascii_only: bool) -> str:
    value: object = format_judgment(judgment) if as_string else judgment
    body = json.dumps({"Analysis": analysis, "Judgment": value}, ensure_ascii=ascii_only)
    return f"```json\n{body}\n```" if fenced else body


def every_shape():
    """All combinations of key, separator, value and joiner (chatter is drawn separately)."""
    return itertools.product(ANALYSIS_KEYS, JUDGMENT_KEYS, SEPARATORS, VALUES, JOINERS)
