"""``doit -n N`` (issue 12, item 5): the same outputs and the same summary as a serial build.

The summary is read from the records on disk, so it cannot depend on which process ran a step.
Each scenario runs a serial build and a parallel one on two copies of the same project and
compares what they wrote and what they said, over several rounds of changes.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.helpers import (
    EXAMPLE_BUILT,
    EXAMPLE_UP_TO_DATE,
    doit_cli,
    example_project,
    make_project,
    sha256_file,
)

SUBMIT = re.compile(r"\d+\.\d\d ms")


def summary(stdout: str) -> list[str]:
    """The summary's lines, submit times blanked (they are measured, not built), spaces folded."""
    lines = stdout.splitlines()
    start = next(
        (i for i, line in enumerate(lines) if line.startswith(("model ", "summary: "))), None
    )
    assert start is not None, stdout
    kept = [line for line in lines[start:] if set(line) != {"-", " "}]
    return [" ".join(SUBMIT.sub("<t> ms", line).split()) for line in kept]


def outputs(root: Path) -> dict[str, str]:
    """Digest of every container and compiled artefact."""
    found = {}
    for pattern in ("build/*_ane.onnx", "compiler-out/*/*"):
        for path in root.glob(pattern):
            found[path.relative_to(root).as_posix()] = sha256_file(path)
    return found


def twin(tmp_path: Path, make: object) -> tuple[Path, Path]:
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    make(serial)  # type: ignore[operator]
    shutil.copytree(serial, parallel)
    return serial, parallel


def both(serial: Path, parallel: Path, *args: str) -> tuple[list[str], list[str]]:
    """Build both projects (``-n 1`` and ``args``); check and return the two summaries."""
    one = doit_cli(serial, "-n", "1")
    many = doit_cli(parallel, *args)
    assert one.returncode == many.returncode, one.stdout + many.stdout
    assert "UnmetDependency" not in one.stdout + many.stdout
    assert outputs(serial).keys() == outputs(parallel).keys()
    assert outputs(serial) == outputs(parallel)
    return summary(one.stdout), summary(many.stdout)


def touch_content(root: Path, names: list[str]) -> None:
    for name in names:
        for path in sorted((root / "compiler-out" / name).glob("*weights*")) or sorted(
            (root / "compiler-out" / name).glob("*.json")
        ):
            path.write_bytes(path.read_bytes().replace(b"A", b"B", 1) + b"\n")


@pytest.mark.parametrize("args", [("-n", "2"), ("-n", "2", "-P", "thread")])
def test_example_project(tmp_path: Path, args: tuple[str, ...]) -> None:
    serial, parallel = twin(tmp_path, example_project)
    first = both(serial, parallel, *args)
    assert first[0] == first[1]
    assert EXAMPLE_BUILT in first[0]
    for root in (serial, parallel):
        tool = root / "tools" / "example_compiler.py"
        tool.write_text(tool.read_text() + "# edited\n")
        cfg = root / "configs" / "sigmoid.toml"
        cfg.write_text('toolchain = "anecc 2"\n' + cfg.read_text())
    second = both(serial, parallel, *args)
    assert second[0] == second[1]
    assert EXAMPLE_BUILT in second[0]
    assert sum(line.startswith("sigmoid ") for line in second[0]) == 1
    # Unchanged: both say so (the serial one through its no-op stamp, the other one too).
    third = both(serial, parallel, *args)
    assert third == ([EXAMPLE_UP_TO_DATE],) * 2


def test_fifty_models_over_several_rounds(tmp_path: Path) -> None:
    def make(root: Path) -> None:
        make_project(root, models=50, weights=4096)

    serial, parallel = twin(tmp_path, make)
    rounds = [
        [],
        [f"m{i}" for i in (1, 4, 7, 10, 22)],  # discovered weights: exactly these rebuild
        [f"m{i}" for i in (2, 5, 8, 26, 44)],  # bundles
    ]
    for number, changed in enumerate(rounds):
        for root in (serial, parallel):
            touch_content(root, changed)
        one, many = both(serial, parallel, "-n", "2")
        assert one == many, f"round {number}"
        touched = sorted(line.split()[0] for line in one[1:] if re.match(r"m\d+ ", line))
        assert touched == sorted(changed or [f"m{i}" for i in range(50)]), f"round {number}"
        rest = 50 - len(touched)
        assert f"{len(touched)} model(s) built or deployed, {rest} already up to date" in one
