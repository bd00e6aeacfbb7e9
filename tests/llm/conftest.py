"""The tiny checkpoint and its split, built once per session for the llm tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import tiny_split


@pytest.fixture(scope="session")
def split_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model split into 2 chunks (context 64, prefill 8), with synthetic containers."""
    return tiny_split(tmp_path_factory.mktemp("llm"))


@pytest.fixture(scope="session")
def model_dir(split_dir: Path) -> Path:
    """The checkpoint (and ONNX export) the split was made from."""
    return split_dir.parent / "model"
