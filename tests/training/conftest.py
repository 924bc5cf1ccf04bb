"""A tiny untrained guard built once per session, and settings that keep rounds on the CPU and in tmp folders."""

from __future__ import annotations

import pytest

from guardmodel.management.commands.build_tiny_guard import synthetic_texts
from qta.tiny import build_tiny_guard


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory):
    """The directory of a tiny random Qwen2.5-VL checkpoint whose tokenizer knows the synthetic set's words."""
    return build_tiny_guard(tmp_path_factory.mktemp("tiny-base"), texts=synthetic_texts())


@pytest.fixture(autouse=True)
def _training_settings(settings, tmp_path):
    settings.GUARDTRACE_TRAINING_DIR = tmp_path / "training"
    settings.GUARDTRACE_TRAIN_DEVICE = "cpu"
    settings.GUARDTRACE_TRAIN_POLL_S = 0.2
    settings.GUARDTRACE_GUARD_MAX_NEW_TOKENS = 40
    settings.GUARDTRACE_GUARD_DEVICE = "cpu"
