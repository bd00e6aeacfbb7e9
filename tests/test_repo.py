"""The repository's promises about itself: the README's two commands and what CI runs."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _quick_start() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = re.search(r"## Quick start.*?```sh\n(.*?)```", text, re.S)
    assert block, "the README has a Quick start with a sh block"
    return [line for line in block.group(1).splitlines() if line and not line.startswith("#")]


def test_the_quick_start_has_exactly_two_commands() -> None:
    commands = _quick_start()
    assert len(commands) == 2, commands
    main, checks = commands
    assert main.endswith(".venv/bin/doit")
    for tool in ("ruff check .", "ruff format --check .", "mypy --strict ane_build", "pytest"):
        assert tool in checks, tool


def test_ci_runs_the_readmes_check_command_unchanged() -> None:
    script = (REPO / ".ci" / "run").read_text().splitlines()
    assert _quick_start()[1] in script


def test_every_test_folder_is_collected(pytestconfig: pytest.Config) -> None:
    """No folder of tests matches ``norecursedirs`` (pytest's default list skips ``build``)."""
    patterns = pytestconfig.getini("norecursedirs")
    folders = {path.parent for path in (REPO / "tests").rglob("test_*.py")}
    for folder in folders:
        for part in folder.relative_to(REPO).parts:
            assert not any(fnmatch.fnmatch(part, p) for p in patterns), (folder, part)
