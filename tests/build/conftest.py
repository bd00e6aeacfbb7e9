"""Fixtures of the build tests: the example project, as a user would have it."""

from __future__ import annotations

from pathlib import Path

import pytest

from ane_build.build.runner import run_doit
from tests.helpers import example_project


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the example project, the working directory (sources generated, nothing built)."""
    root = example_project(tmp_path / "proj")
    monkeypatch.chdir(root)
    return root


@pytest.fixture
def built(project: Path) -> Path:
    """The example project, built once."""
    assert run_doit(project, []) == 0
    return project
