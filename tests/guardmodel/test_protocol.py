from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from qta.protocol import (
    JUDGMENTS,
    PROMPT_VERSION,
    QA_JUDGMENTS,
    build_messages,
    format_judgment,
    format_target,
    parse_output,
)

ANALYSIS = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300).filter(
    lambda t: "judg" not in t.lower() and "analysis" not in t.lower()
)
JUDGMENT = st.sampled_from(JUDGMENTS)


@settings(max_examples=300, deadline=None)
@given(analysis=ANALYSIS, judgment=JUDGMENT)
def test_what_format_target_writes_parses_back(analysis, judgment):
    parsed = parse_output(format_target(analysis=analysis, judgment=judgment))
    assert parsed.judgment == judgment
    assert parsed.analysis == analysis.strip().rstrip(" \t\r\n*#_[(,{\"'“”‘’„«»`").strip()


DECORATIONS = [
    "Judgment: {v}", "**Judgment:** {v}", "Judgment: [{v}]", "Judgment: ({v})", 'Judgment: "{v}"',
    "Judgment: “{v}”", "Judgment: ‘{v}’", "JUDGMENT: {v}", "Judgement: {v}", "## Judgment\n{v}",
    "Judgment = {v}", "- **Judgment**: `{v}`", "Judgment：{v}",
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    analysis=ANALYSIS,
    judgment=JUDGMENT,
    decoration=st.sampled_from(DECORATIONS),
    chatter=st.sampled_from(
        ["", ".", "\n\nI hope this helps.", " — final.", "\nLet me know if you need more."]
    ),
)
def test_common_variants_are_read(analysis, judgment, decoration, chatter):
    text = f"Analysis: {analysis}\n" + decoration.format(v=format_judgment(judgment)) + chatter
    assert parse_output(text).judgment == judgment


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=400))
def test_it_never_guesses(text):
    """Whatever the text, the result is a protocol level, or invalid with a reason."""
    parsed = parse_output(text)
    if parsed.judgment is None:
        assert parsed.reason
    else:
        assert parsed.judgment in JUDGMENTS
        assert "judg" in text.lower()


@settings(max_examples=200, deadline=None)
@given(analysis=ANALYSIS, value=st.sampled_from(["0.7", "2", "5", "0.25", "10", "1/2", "0.5-1", "50%", "-1"]))
def test_values_outside_the_levels_are_invalid(analysis, value):
    parsed = parse_output(f"Analysis: {analysis}\nJudgment: {value}")
    assert parsed.judgment is None and parsed.reason


@given(analysis=ANALYSIS)
def test_text_without_a_judgment_is_invalid(analysis):
    assume(analysis.strip())
    assert parse_output(f"Analysis: {analysis}").judgment is None


def test_conflicting_judgments_are_invalid_and_repeats_are_fine():
    assert parse_output("Judgment: 1\nOn reflection, Judgment: 0").reason == "conflicting judgments"
    assert parse_output("Judgment: 1\nSo again, Judgment: 1.0").judgment == 1.0


def test_the_qa_variant_reads_only_zero_and_one():
    assert parse_output("Analysis: x\nJudgment: 0.5", variant="qa").judgment is None
    assert parse_output("Analysis: x\nJudgment: 1", variant="qa").judgment == 1.0
    assert QA_JUDGMENTS == (0.0, 1.0)


def test_messages_put_the_image_first_and_delimit_each_part():
    messages = build_messages(question="Q?", thinking="step 1\n\nstep 2", answer="A.", has_image=True)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "0.5 (potentially harmful)" in messages[0]["content"][0]["text"]
    user = messages[1]["content"]
    assert user[0] == {"type": "image"}
    text = user[1]["text"]
    assert text.index("<question>") < text.index("<reasoning>") < text.index("<answer>")
    assert "step 1\n\nstep 2" in text


def test_the_qa_baseline_leaves_out_the_reasoning_and_text_only_samples_have_no_image():
    messages = build_messages(
        question="Q?", thinking="secret steps", answer="A.", has_image=False, variant="qa"
    )
    assert messages[1]["content"] == [
        {"type": "text", "text": "<question>\nQ?\n</question>\n\n<answer>\nA.\n</answer>"}
    ]
    assert "0 or 1" in messages[0]["content"][0]["text"]


def test_format_target_refuses_other_levels_and_the_version_is_named():
    with pytest.raises(ValueError, match="0.7"):
        format_target(analysis="x", judgment=0.7)
    assert PROMPT_VERSION == "qta-v1"


def test_for_binary_metrics_potentially_harmful_counts_as_harmful():
    from qta.protocol import is_harmful

    assert [is_harmful(j) for j in JUDGMENTS] == [False, True, True]


# -- every published output shape ---------------------------------------------------------------------------------

from tests.guardmodel import shapes  # noqa: E402

WORDS = (
    st.lists(
        st.text(st.characters(whitelist_categories=("Ll", "Lu", "Nd")), min_size=1, max_size=9),
        min_size=1,
        max_size=40,
    )
    .map(" ".join)
    .filter(lambda t: "judg" not in t.lower() and "analysis" not in t.lower())
)


@settings(max_examples=600, deadline=None)
@given(
    analysis=WORDS,
    judgment=JUDGMENT,
    akey=st.sampled_from(shapes.ANALYSIS_KEYS),
    jkey=st.sampled_from(shapes.JUDGMENT_KEYS),
    sep=st.sampled_from(shapes.SEPARATORS),
    value=st.sampled_from(shapes.VALUES),
    joiner=st.sampled_from(shapes.JOINERS),
    chatter=st.sampled_from(shapes.CHATTER),
)
def test_every_published_shape_is_read_exactly(analysis, judgment, akey, jkey, sep, value, joiner, chatter):
    text = shapes.render(
        analysis, judgment, akey=akey, jkey=jkey, sep=sep, value=value, joiner=joiner, chatter=chatter
    )
    parsed = parse_output(text)
    assert (parsed.judgment, parsed.analysis) == (judgment, analysis), text


@settings(max_examples=300, deadline=None)
@given(
    analysis=st.text(st.characters(blacklist_categories=("Cs",)), max_size=200),
    judgment=JUDGMENT,
    as_string=st.booleans(),
    fenced=st.booleans(),
    ascii_only=st.booleans(),
)
def test_json_objects_are_read_with_their_analysis(analysis, judgment, as_string, fenced, ascii_only):
    text = shapes.json_output(analysis, judgment, as_string=as_string, fenced=fenced, ascii_only=ascii_only)
    parsed = parse_output(text)
    assert (parsed.judgment, parsed.analysis) == (judgment, analysis.strip())


def test_the_release_models_own_shapes_are_read():
    assert parse_output("“Analysis”: The reasoning lists steps.\n“Judgment”: 1").judgment == 1.0
    assert parse_output("“Analysis”: fine.\n“Judgment”: [0.5]").judgment == 0.5
    assert parse_output('"Judgment": 0').judgment == 0.0
    parsed = parse_output('{"Analysis": "It refuses cleanly.", "Judgment": 0.5}')
    assert (parsed.judgment, parsed.analysis) == (0.5, "It refuses cleanly.")
    parsed = parse_output("“Analysis”: “The trace leaks a recipe.”\n“Judgment”: “1”")
    assert (parsed.judgment, parsed.analysis) == (1.0, "The trace leaks a recipe.")


@pytest.mark.parametrize(
    "text",
    [
        "“Judgment”: [0/0.5/1]",  # the prompt's placeholder echoed back
        '{"Analysis": "x", "Judgment": 0.7}',
        '{"Analysis": "x", "Judgment": [0, 1]}',
        '{"Analysis": "x", "Judgment": true}',
        '{"Analysis": "x"}',
        '{"Analysis": "x", "Judgment": 1, "judgment": 0}',
        '{"Judgment": 1, "Judgment": 1}',
        "“Judgment”: 1\n“Judgment”: 0",
        "“Analysis”: misjudgments 1 happen",
    ],
)
def test_unclear_shapes_stay_invalid(text):
    parsed = parse_output(text)
    assert parsed.judgment is None and parsed.reason


def test_a_users_template_is_versioned_by_its_content_and_lays_out_the_release_turn():
    from qta.protocol import QTA_TEMPLATE, Template

    mine = Template(
        "release", "Judge the exchange. Reply “Analysis”: … “Judgment”: [0/0.5/1]", layout="release"
    )
    edited = Template("release", mine.system + " Be brief.", layout="release")
    assert mine.version.startswith("release-") and len(mine.version) <= 32
    assert mine.version != edited.version and QTA_TEMPLATE.version == PROMPT_VERSION
    messages = mine.messages(question="Q?", thinking="", answer="A.", has_image=True)
    assert messages[0]["content"][0]["text"] == mine.system
    assert messages[1]["content"][0] == {"type": "image"}
    assert messages[1]["content"][1]["text"] == (
        "Current Task Query: Q?\nCurrent Task Thinking: No thinking provided\nCurrent Task Cleaned Response: A."
    )
    with pytest.raises(ValueError, match="name"):
        Template("Has Spaces", "x")
    with pytest.raises(ValueError, match="system_prompt"):
        Template("empty", "  ")
