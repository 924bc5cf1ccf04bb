"""A served guard's risk scores: read from the endpoint's log-probabilities at the judgment slot, the branches the
guard did not write asked for by continuing its message, and equal to what the same checkpoint scores locally."""

from __future__ import annotations

import pytest

from qta import protocol
from qta.engine import AuditInput, EngineOptions, OpenAIGuard, TransformersGuard, decode_image
from tests.conftest import png_bytes
from tests.loopback import LoopbackOpenAI
from tests.served import ServedModel

LEVELS = tuple(protocol.format_judgment(j) for j in protocol.JUDGMENTS)
PREFIX = "Analysis: The reasoning is read step by step.\nJudgment: "


@pytest.mark.parametrize("with_image", [False, True])
def test_served_scores_equal_the_local_scores_of_the_same_checkpoint(lively_dir, with_image):
    """With every token's log-probability served (vLLM --max-logprobs at the vocabulary), the served reading is
    the local one: same levels, same ending rule, the branches not written filled by continuing the message."""
    item = AuditInput("How would one do it?", "First, the parts.\n\nThen, the order.", "I can't help.",
                      png_bytes(size=(40, 28)) if with_image else None)  # fmt: skip
    local = TransformersGuard(lively_dir, EngineOptions(max_new_tokens=4))
    with ServedModel(lively_dir, prefix=PREFIX, levels=LEVELS) as server:
        vocabulary = len(server._texts)
        guard = OpenAIGuard(server.url, server.name, scores=True, max_tokens=8, top_logprobs=vocabulary)
        verdict = guard.judge([item])[0]
        assert verdict.status == "valid", verdict.error
        assert server.requests[0]["logprobs"] is True and server.requests[0]["top_logprobs"] == vocabulary
        # The levels the guard did not write were asked for by continuing its message (prefix-cached on vLLM).
        continued = [r for r in server.requests[1:] if r.get("continue_final_message")]
        assert continued and all(r["max_tokens"] == 1 and not r["add_generation_prompt"] for r in continued)
        assert (
            len(server.requests) == 1 + len(continued) <= 4
        )  # at most "0", "0.", "0.5" and "1" off the path
        prompt = server.prompts[0]
    image = None if item.image is None else decode_image(item.image)
    expected = local.scorer.score([(prompt, image, verdict.raw_output)])[0]
    served = verdict.scores
    assert served is not None and set(served["levels"]) == set(LEVELS)
    assert [served["levels"][level] for level in LEVELS] == pytest.approx(
        [expected.levels[level] for level in LEVELS], abs=1e-4
    )
    assert served["harmful"] == pytest.approx(expected.harmful, abs=1e-4)


def test_a_server_without_log_probabilities_gives_a_verdict_without_scores():
    with LoopbackOpenAI(lambda body: "Analysis: fine.\nJudgment: 0") as server:
        verdict = OpenAIGuard(server.url, "m", scores=True).judge([AuditInput("Q?", "T.", "A.")])[0]
    assert verdict.status == "valid" and verdict.judgment == 0.0 and verdict.scores is None
    assert len(server.requests) == 1  # nothing more was asked


def test_jurors_and_plain_served_calls_ask_for_no_log_probabilities():
    with LoopbackOpenAI(lambda body: "Analysis: fine.\nJudgment: 0") as server:
        OpenAIGuard(server.url, "m").judge([AuditInput("Q?", "T.", "A.")])
    assert "logprobs" not in server.requests[0]


def test_a_served_guard_locates_the_harm_as_the_local_one_does(lively_dir):
    item = AuditInput(
        "How would one do it?", "First, the parts.\n\nSecond, the order.\n\nThird, a refusal.", "No."
    )
    local = TransformersGuard(lively_dir, EngineOptions(max_new_tokens=4)).prefix_risk(item, 0.3, "cue")
    with ServedModel(lively_dir) as server:
        guard = OpenAIGuard(server.url, server.name, top_logprobs=len(server._texts))
        served = guard.prefix_risk(item, 0.3, "cue")
        # Every request continues the guard's message from the judgment cue, one token at a time.
        assert all(r["continue_final_message"] and r["max_tokens"] == 1 for r in server.requests)
        assert all(r["messages"][-1]["content"].startswith("Judgment: ") for r in server.requests)
    assert served is not None and len(served["steps"]) == 3
    assert served["steps"] == pytest.approx(local["steps"], abs=1e-4)
    assert served["segments"] == pytest.approx(local["segments"], abs=1e-4)
    assert served["first_unsafe_step"] == local["first_unsafe_step"]
    with LoopbackOpenAI(lambda body: "Analysis: fine.\nJudgment: 0") as plain:
        assert (
            OpenAIGuard(plain.url, "m").prefix_risk(item) is None
        )  # no log-probabilities: nothing to locate


@pytest.mark.django_db
def test_the_audit_api_answers_a_served_checkpoints_scores_and_located_harm(
    lively_dir, settings, api_for, reviewer_user
):
    from django.urls import reverse

    from guardmodel import services

    body = {"question": "Q?", "thinking": "One.\n\nTwo.", "answer": "A.", "locate": True}
    with ServedModel(lively_dir, prefix=PREFIX, levels=LEVELS) as server:
        settings.GUARDTRACE_GUARD_TOP_LOGPROBS = len(server._texts)  # as vLLM's --max-logprobs would allow
        services.checkpoint_register(
            name="served", endpoint=server.url, served_model=server.name, activate=True
        )
        answer = api_for(reviewer_user).post(reverse("api_audit"), body, format="json").json()
    assert answer["status"] == "valid" and abs(sum(answer["scores"]["levels"].values()) - 1) < 1e-5
    assert len(answer["located"]["steps"]) == 2 and set(answer["located"]["segments"]) == {
        "question", "reasoning", "answer",
    }  # fmt: skip
