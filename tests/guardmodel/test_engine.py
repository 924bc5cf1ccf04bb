"""The batched engine on a tiny checkpoint: batching does not change answers, bad inputs fail alone."""

from __future__ import annotations

import pytest
import torch

from qta.engine import AuditInput, EngineOptions, TransformersGuard, Verdict
from tests.conftest import png_bytes


def _items() -> list[AuditInput]:
    words = ["bread", "a locked door", "the weather", "a chemistry kit", "a garden", "a password"]
    return [
        AuditInput(
            question=f"How do I deal with {w}?",
            thinking=f"The user asks about {w}. " * (1 + i % 3),
            answer="Here is a careful answer.",
            image=png_bytes(color=(40 * i, 90, 200 - 30 * i), size=(60 + 20 * i, 50)) if i % 2 else None,
        )
        for i, w in enumerate(words)
    ]


def test_batched_greedy_answers_equal_one_at_a_time_answers(lively_dir):
    items = _items()
    single = TransformersGuard(lively_dir, EngineOptions(max_new_tokens=12, batch_size=1, device="cpu"))
    batched = TransformersGuard(lively_dir, EngineOptions(max_new_tokens=12, batch_size=6, device="cpu"))
    one_by_one = [single.judge([item])[0] for item in items]
    together = batched.judge(items)
    outputs = [v.raw_output for v in one_by_one]
    assert len(set(outputs)) > 1, "the lively model should answer differently to different inputs"
    assert [v.raw_output for v in together] == outputs
    assert all(v.completion_tokens > 0 and v.prompt_tokens > 0 for v in together)
    # The image samples have more prompt tokens: the image's placeholder tokens were expanded.
    assert together[1].prompt_tokens > together[0].prompt_tokens


def test_each_output_is_read_with_the_protocol_and_untrained_output_is_invalid_not_guessed(tiny_dir):
    guard = TransformersGuard(tiny_dir, EngineOptions(max_new_tokens=8, device="cpu"))
    verdicts = guard.judge(_items()[:2])
    for verdict in verdicts:
        assert verdict.status == "invalid" and verdict.judgment is None
        assert verdict.error  # why it is invalid
    parsed = Verdict.from_output("Analysis: the trace gives steps.\nJudgment: 1")
    assert (parsed.status, parsed.judgment, parsed.analysis) == ("valid", 1.0, "the trace gives steps.")


def test_a_broken_image_fails_its_sample_only(tiny_dir):
    guard = TransformersGuard(tiny_dir, EngineOptions(max_new_tokens=4, device="cpu"))
    items = _items()[:3]
    items.insert(1, AuditInput("q", "t", "a", image=b"\x89PNG\r\n\x1a\nbroken"))
    verdicts = guard.judge(items)
    assert [v.status for v in verdicts] == ["invalid", "failed", "invalid", "invalid"]
    assert "image could not be decoded" in verdicts[1].error


def test_an_image_over_the_pixel_limit_is_refused(tiny_dir):
    guard = TransformersGuard(tiny_dir, EngineOptions(max_new_tokens=4, device="cpu", max_image_pixels=1000))
    verdict = guard.judge([AuditInput("q", "t", "a", image=png_bytes(size=(100, 100)))])[0]
    assert verdict.status == "failed" and "over the limit of 1000" in verdict.error


def test_a_1mb_reasoning_is_cut_from_the_middle_and_the_image_kept(tiny_dir):
    limit = 700
    guard = TransformersGuard(tiny_dir, EngineOptions(max_new_tokens=4, device="cpu", max_input_tokens=limit))
    thinking = (
        "BEGINNING of the trace. " + "Then one more step is considered. " * 30_000 + "END of the trace."
    )
    assert len(thinking) > 1_000_000
    item = AuditInput("q?", thinking, "a", image=png_bytes(size=(112, 112)))
    prepared = guard._prepare(0, item)
    assert prepared.prompt_tokens <= limit
    assert prepared.truncated > 100_000
    assert "BEGINNING of the trace." in prepared.text and "END of the trace." in prepared.text
    assert "tokens of reasoning removed" in prepared.text
    # The image's placeholder survives whole: 112x112 → 4x4 merged patches → 16 image tokens after expansion.
    encoded = guard.processor(text=[prepared.text], images=[prepared.image])
    image_id = guard.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert list(encoded["input_ids"][0]).count(image_id) == 16
    verdict = guard.judge([item])[0]
    assert verdict.truncated_tokens == prepared.truncated and verdict.meta()["truncated_tokens"] > 0


def test_a_prompt_too_long_without_its_reasoning_fails_alone_naming_the_limit(tiny_dir):
    guard = TransformersGuard(tiny_dir, EngineOptions(max_new_tokens=4, device="cpu", max_input_tokens=600))
    crowded = AuditInput("How do I open it? " * 300, "Then one more step is considered. " * 300, "a")
    verdicts = guard.judge([crowded, AuditInput("q?", "t", "a")])
    assert verdicts[0].status == "failed" and "without any reasoning; the limit is 600" in verdicts[0].error
    assert verdicts[1].status == "invalid" and verdicts[1].truncated_tokens == 0


def test_an_empty_reasoning_is_judged(tiny_dir):
    guard = TransformersGuard(tiny_dir, EngineOptions(max_new_tokens=4, device="cpu"))
    verdict = guard.judge([AuditInput("q?", "", "a")])[0]
    assert verdict.status == "invalid" and verdict.truncated_tokens == 0


class _SmallMemoryGuard(TransformersGuard):
    """Fault injection: a device that runs out of memory on batches larger than two."""

    batches: list[int]

    def _generate(self, batch):
        self.batches.append(len(batch))
        if len(batch) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super()._generate(batch)


def test_out_of_memory_halves_the_batch_and_goes_on(lively_dir):
    items = _items()
    guard = _SmallMemoryGuard(lively_dir, EngineOptions(max_new_tokens=6, batch_size=6, device="cpu"))
    guard.batches = []
    verdicts = guard.judge(items)
    assert all(v.status != "failed" for v in verdicts)
    assert guard.batches[:3] == [6, 3, 1] and guard.oom_halvings >= 2
    assert guard.batch_size <= 2  # later batches start small
    reference = TransformersGuard(lively_dir, EngineOptions(max_new_tokens=6, batch_size=1, device="cpu"))
    assert [v.raw_output for v in verdicts] == [reference.judge([i])[0].raw_output for i in items]


def test_an_error_that_is_not_out_of_memory_fails_the_batch_not_the_job(tiny_dir):
    class Broken(TransformersGuard):
        def _generate(self, batch):
            raise RuntimeError("device lost")

    verdicts = Broken(tiny_dir, EngineOptions(max_new_tokens=4, device="cpu")).judge(_items()[:2])
    assert [v.status for v in verdicts] == ["failed", "failed"]
    assert verdicts[0].error == "RuntimeError: device lost"


@pytest.mark.parametrize("batch_size", [1, 4])
def test_progress_is_reported_per_sample(tiny_dir, batch_size):
    seen = []
    guard = TransformersGuard(tiny_dir, EngineOptions(max_new_tokens=2, batch_size=batch_size, device="cpu"))
    guard.judge(_items()[:5], progress=seen.append)
    assert sum(seen) == 5


@pytest.mark.parametrize("size", [(16, 16), (112, 112), (300, 120), (37, 500), (1000, 1000)])
def test_the_prompt_length_shortcut_equals_the_processors_count(tiny_dir, size):
    from qta.engine import decode_image

    guard = TransformersGuard(tiny_dir, EngineOptions(device="cpu"))
    image = decode_image(png_bytes(size=size))
    text = guard._render(AuditInput("q", "t", "a"), "t", True)
    assert guard._count(text, image) == len(guard.processor(text=[text], images=[image])["input_ids"][0])
