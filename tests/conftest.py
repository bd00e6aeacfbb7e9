"""Shared pytest fixtures: anec samples and kernel vectors (read in place, skipped when absent)."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import pytest

from ane_build.check.samples import samples_dir as check_samples_dir

REPO = Path(__file__).resolve().parents[1]


def samples_dir() -> Path | None:
    """The shared `.anec` samples folder, or None when this checkout has none beside it."""
    return check_samples_dir(REPO.parent / "shared" / "anec-samples")


_NO_SAMPLES = "../shared/anec-samples is not present in this checkout"
SAMPLE_FILES = sorted(samples_dir().glob("*.ane")) if samples_dir() else []
# For parametrize: each sample by name, or one case skipped with the reason (not pytest's bare
# "empty parameter set").
SAMPLE_PARAMS = [pytest.param(p, id=p.name) for p in SAMPLE_FILES] or [
    pytest.param(None, id="no-samples", marks=pytest.mark.skip(reason=_NO_SAMPLES))
]


@pytest.fixture
def anec_samples() -> Path:
    """Folder of real `.anec` files; skips the test when it is absent."""
    folder = samples_dir()
    if folder is None:
        pytest.skip(_NO_SAMPLES)
    return folder


KERNEL_VECTORS_FILE = "fork-onnx-parser.jsonl"


def kernel_vectors_path() -> Path | None:
    """The fork kernel's ONNX parser verdicts (``ANE_KERNEL_VECTORS``: the file or its folder)."""
    env = os.environ.get("ANE_KERNEL_VECTORS")
    path = Path(env) if env else REPO.parent / "shared" / "kernel-vectors"
    if path.is_dir():
        path = path / KERNEL_VECTORS_FILE
    return path if path.is_file() else None


@functools.cache
def load_kernel_vectors() -> tuple[dict[str, Any], ...]:
    """Every kernel vector, in file order; empty when the file is absent."""
    path = kernel_vectors_path()
    if path is None:
        return ()
    return tuple(json.loads(line) for line in path.read_text().splitlines() if line.strip())


@pytest.fixture
def kernel_vectors() -> tuple[dict[str, Any], ...]:
    """The kernel vectors; skips the test when this checkout has none beside it."""
    vectors = load_kernel_vectors()
    if not vectors:
        pytest.skip("../shared/kernel-vectors is not present in this checkout")
    return vectors


def _hardware_problem() -> str | None:
    from ane_build.driver.device import ANEDevice
    from ane_build.errors import AneError

    try:
        ANEDevice.open().close()
    except AneError as exc:
        return f"no ANE hardware: {exc}"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked ``hardware`` unless a real ``ane`` node can be opened."""
    marked = [item for item in items if item.get_closest_marker("hardware")]
    if not marked:
        return
    problem = _hardware_problem()
    if problem:
        for item in marked:
            item.add_marker(pytest.mark.skip(reason=problem))
