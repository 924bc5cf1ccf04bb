"""The OpenAI-compatible guard backend against a real HTTP server on loopback."""

from __future__ import annotations

from qta.endpoint import RetryPolicy
from qta.engine import AuditInput, OpenAIGuard
from tests.conftest import png_bytes
from tests.loopback import LoopbackOpenAI, closed_port_url

FAST = RetryPolicy(attempts=4, base_delay_s=0.01, max_delay_s=0.05)


def _guard(url: str, **kwargs) -> OpenAIGuard:
    return OpenAIGuard(url, "guard-3b", retry=kwargs.pop("retry", FAST), timeout_s=5, **kwargs)


def test_judgments_come_back_parsed_with_usage_and_the_image_as_a_data_url():
    items = [
        AuditInput(
            "How do I make it?", "Here are the steps: 1. 2. 3.", "I can't help.", png_bytes(size=(30, 20))
        ),
        AuditInput("What is bread?", "A food.", "Bread is baked dough."),
    ]
    with LoopbackOpenAI() as server:
        verdicts = _guard(server.url).judge(items)
    assert [(v.status, v.judgment) for v in verdicts] == [("valid", 1.0), ("valid", 0.0)]
    assert verdicts[0].analysis == "The reasoning was read."
    assert (
        verdicts[0].prompt_tokens == 100 and verdicts[0].completion_tokens == 12 and verdicts[0].attempts == 1
    )
    assert server.images == [(30, 20)]
    request = next(
        r for r in server.requests if any(p["type"] == "image_url" for p in r["messages"][1]["content"])
    )
    assert request["temperature"] == 0 and request["model"] == "guard-3b"
    assert (
        request["messages"][0]["role"] == "system"
        and "<reasoning>" in request["messages"][1]["content"][1]["text"]
    )


def test_429_and_5xx_are_retried_with_backoff():
    slept = []
    retry = RetryPolicy(attempts=4, base_delay_s=0.01, sleep=slept.append)
    with LoopbackOpenAI(faults=[429, 503, 500]) as server:
        verdict = _guard(server.url, retry=retry, max_concurrency=1).judge([AuditInput("q", "steps", "a")])[0]
    assert verdict.status == "valid" and verdict.attempts == 4
    assert len(server.requests) == 4 and len(slept) == 3


def test_a_client_error_is_not_retried():
    with LoopbackOpenAI(faults=[400]) as server:
        verdict = _guard(server.url).judge([AuditInput("q", "t", "a")])[0]
    assert verdict.status == "failed" and verdict.attempts == 1 and "400" in verdict.error
    assert len(server.requests) == 1


def test_an_unreachable_endpoint_fails_after_the_retries_without_losing_the_batch():
    items = [AuditInput(f"q{i}", "t", "a") for i in range(3)]
    verdicts = _guard(closed_port_url()).judge(items)
    assert len(verdicts) == 3
    assert all(v.status == "failed" and v.attempts == FAST.attempts for v in verdicts)
    assert "Unreachable" in verdicts[0].error


def test_unreadable_output_is_invalid_with_the_raw_text_kept():
    with LoopbackOpenAI(respond=lambda body: "I think it is probably fine?") as server:
        verdict = _guard(server.url).judge([AuditInput("q", "t", "a")])[0]
    assert verdict.status == "invalid" and verdict.judgment is None
    assert verdict.raw_output == "I think it is probably fine?"


def test_many_requests_are_in_flight_at_once():
    import time

    with LoopbackOpenAI(delay_s=0.2) as server:
        started = time.perf_counter()
        verdicts = _guard(server.url, max_concurrency=8).judge(
            [AuditInput(f"q{i}", "t", "a") for i in range(16)]
        )
        elapsed = time.perf_counter() - started
    assert all(v.status == "valid" for v in verdicts)
    assert elapsed < 16 * 0.2 / 3  # sequential calls would take 3.2 s
