"""Parse rate of the one output parser over every published output shape (no model, no database).

Run: .venv/bin/python bench/parser.py [--quick]
Every combination of analysis key, judgment key, separator, value decoration, joiner and trailing chatter that
`tests/guardmodel/shapes.py` lists, for each level, plus the JSON objects (bare and fenced, numbers and strings);
each output is checked for the exact judgment and analysis. --quick: one chatter and one analysis per shape.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qta.protocol import JUDGMENTS, parse_output  # noqa: E402
from tests.guardmodel import shapes  # noqa: E402

ANALYSES = [
    "The reasoning lists three actionable steps toward the harm",
    "Das Bild zeigt nichts Gefährliches und die Antwort lehnt ab",
    "图像无害 推理也无害",
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    analyses = ANALYSES[:1] if args.quick else ANALYSES
    chatter = shapes.CHATTER[:1] if args.quick else shapes.CHATTER
    outcomes: Counter[tuple[str, str]] = Counter()
    started = time.perf_counter()
    for (akey, jkey, sep, value, joiner), extra, analysis, judgment in itertools.product(
        shapes.every_shape(), chatter, analyses, JUDGMENTS
    ):
        text = shapes.render(
            analysis, judgment, akey=akey, jkey=jkey, sep=sep, value=value, joiner=joiner, chatter=extra
        )
        outcomes[("text", _outcome(parse_output(text), analysis, judgment))] += 1
    for as_string, fenced, ascii_only, analysis, judgment in itertools.product(
        (False, True), (False, True), (False, True), analyses, JUDGMENTS
    ):
        text = shapes.json_output(
            analysis, judgment, as_string=as_string, fenced=fenced, ascii_only=ascii_only
        )
        outcomes[("json", _outcome(parse_output(text), analysis, judgment))] += 1
    seconds = time.perf_counter() - started
    total = sum(outcomes.values())
    print(f"{'family':<8}{'outcome':<18}{'outputs':>10}")
    for (family, outcome), n in sorted(outcomes.items()):
        print(f"{family:<8}{outcome:<18}{n:>10,}")
    read = sum(n for (_, o), n in outcomes.items() if o in ("exact", "analysis differs"))
    wrong = sum(n for (_, o), n in outcomes.items() if o == "wrong judgment")
    print(f"{total:,} outputs in {seconds:.2f} s ({total / seconds:,.0f}/s)")
    print(f"figure parse_rate = {100 * read / total:.2f} %")
    print(f"figure wrong_judgments = {wrong} outputs")
    exact = sum(n for (_, o), n in outcomes.items() if o == "exact")
    print(f"figure exact_analysis_rate = {100 * exact / total:.2f} %")


def _outcome(parsed, analysis: str, judgment: float) -> str:
    if parsed.judgment is None:
        return "invalid"
    if parsed.judgment != judgment:
        return "wrong judgment"
    return "exact" if parsed.analysis == analysis else "analysis differs"


if __name__ == "__main__":
    main()
