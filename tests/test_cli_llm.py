"""``ane-build llm split``: exit codes, the printed plan, a dry run that writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from ane_build.cli import main
from ane_build.llm.manifest import read_manifest
from tests.helpers import tiny_split


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_split(tmp_path_factory.mktemp("cli"), compile=False).parent / "model"


def test_split_prints_the_plan_and_writes_the_folder(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "s"
    args = ["llm", "split", str(model_dir), "-o", str(out), "--context", "32", "--prefill", "4"]
    assert main(args) == 0
    printed = capsys.readouterr()
    assert "block_0.decode" in printed.out and "ANE address space" in printed.out
    assert "writing" in printed.err
    assert read_manifest(out).plan.blocks == 1  # auto: the tiny model fits one chunk
    assert main(args) == 0
    assert "up to date" in capsys.readouterr().out


def test_dry_run_writes_nothing(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            [
                "llm",
                "split",
                str(model_dir),
                "-o",
                str(tmp_path / "s"),
                "--dry-run",
                "--chunks",
                "2",
            ]
        )
        == 0
    )
    assert "dry run" in capsys.readouterr().out
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    ("extra", "code", "words"),
    [
        (["--chunks", "9"], 1, "the model has 2 layers"),
        (["--context", "4096"], 1, "max_position_embeddings"),
        (["--context", "1"], 1, "context"),
        (["--chunks", "lots"], 2, "auto or a positive integer"),
        (["--prefill", "0"], 2, "greater than 0"),
    ],
)
def test_errors(
    model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    code: int,
    words: str,
) -> None:
    argv = ["llm", "split", str(model_dir), "-o", str(tmp_path / "s"), *extra]
    if code == 2:
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
    else:
        assert main(argv) == 1
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
    assert not (tmp_path / "s").exists()


def test_not_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["llm", "split", str(tmp_path), "-o", str(tmp_path / "s")]) == 1
    assert "config.json" in capsys.readouterr().err
