from __future__ import annotations

from pathlib import Path

import pytest

from guardmodel.tiny import TinySpec, build_tiny_guard


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """A tiny random Qwen2.5-VL checkpoint, built once per test session, read-only for tests."""
    return build_tiny_guard(tmp_path_factory.mktemp("tiny") / "guard", texts=["Step 1. Step 2."])


@pytest.fixture(scope="session")
def lively_dir(tmp_path_factory) -> Path:
    """A tiny checkpoint with large random weights: its greedy output depends on its input (for batching tests)."""
    return build_tiny_guard(
        tmp_path_factory.mktemp("lively") / "guard", spec=TinySpec(initializer_range=0.6, seed=3)
    )
