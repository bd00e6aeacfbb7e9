"""The no-op fast path (issue 12, item 7): trusted only while nothing it describes changed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ane_build.build.noop import check_stamp, stamp_path
from ane_build.build.runner import run_doit
from tests.helpers import EXAMPLE_PROGRAMS, EXAMPLE_UP_TO_DATE, doit_cli, example_project

UP_TO_DATE = EXAMPLE_UP_TO_DATE


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = example_project(tmp_path / "proj")
    monkeypatch.chdir(root)
    assert run_doit(root, []) == 0
    # The first build generated its sources while it ran (the example task): it leaves no
    # stamp, as inputs changed under it; the second one, a full check that found nothing, does.
    assert check_stamp(root) is None
    assert run_doit(root, []) == 0
    assert check_stamp(root) == len(EXAMPLE_PROGRAMS)
    return root


def stamp_id(root: Path) -> tuple[int, int] | None:
    try:
        st = stamp_path(root).stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def fast(root: Path, *args: str) -> bool:
    """Run doit; whether it answered from the stamp (then it neither loads tasks nor writes)."""
    before = stamp_id(root), (root / "build" / "report.json").stat().st_mtime_ns
    proc = doit_cli(root, *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    after = stamp_id(root), (root / "build" / "report.json").stat().st_mtime_ns
    if before == after:
        assert proc.stdout.strip() == UP_TO_DATE, proc.stdout
    return before == after


def test_an_unchanged_project_is_answered_from_the_stamp(project: Path) -> None:
    assert fast(project)
    assert fast(project, "-n", "2")


def test_every_kind_of_change_is_noticed(project: Path) -> None:
    def bump(path: Path) -> None:
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))

    for path in (
        "configs/relu.toml",
        "configs/defaults.toml",
        "tools/example_compiler.py",
        "models/add.onnx",
        "compiler-out/relu/relu.anec",
        "build/sigmoid_ane.onnx",
        "build/deploy/concat.json",
        "dodo.py",
    ):
        bump(project / path)
        assert not fast(project), path  # checked in full (a touch rebuilds nothing)
        assert fast(project), path  # and the stamp is back
    (project / "compiler-out" / "relu" / "extra.bin").write_bytes(b"x")
    assert not fast(project)


def test_options_that_change_the_run_bypass_it(project: Path) -> None:
    assert not fast(project, "-a", "verify:relu")
    assert not fast(project)  # -a rewrote relu's files: checked in full once
    assert fast(project)
    proc = doit_cli(project, "convert:relu")
    assert proc.returncode == 0 and "convert:relu" not in proc.stdout.replace("summary", "")
    proc = doit_cli(project, "--reporter", "json")
    assert proc.returncode == 0 and proc.stdout.lstrip().startswith("{"), proc.stdout


def test_doit_state_changes_remove_it(project: Path) -> None:
    assert doit_cli(project, "forget", "deploy:add").returncode == 0
    assert check_stamp(project) is None
    proc = doit_cli(project)
    assert ".  deploy:add" in proc.stdout, proc.stdout
    assert check_stamp(project) == len(EXAMPLE_PROGRAMS)
    assert doit_cli(project, "ignore", "deploy:add").returncode == 0
    assert check_stamp(project) is None


def test_no_stamp_when_an_input_changed_during_the_run(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """relu's compiler rewrites a file add's compile reads: add may have seen the old one."""
    knob = project / "knobs" / "add.txt"
    knob.parent.mkdir()
    knob.write_text("1")
    (project / "configs" / "add.toml").write_text(
        'source = "models/add.onnx"\n[compile]\ninputs = ["knobs/add.txt"]\n'
    )
    (project / "tools" / "knob.py").write_text(
        "import os, sys\n"
        "open(os.path.join('knobs', 'add.txt'), 'a').write('2')  # cwd: the project root\n"
        "os.execv(sys.executable, [sys.executable, sys.argv[1], sys.argv[2], sys.argv[3]])\n"
    )
    (project / "configs" / "relu.toml").write_text(
        'source = "models/relu.onnx"\n[compile]\ntool = "tools/knob.py"\n'
        'command = ["{python}", "{tool}", "tools/example_compiler.py", "{source}", "{out}"]\n'
    )
    assert run_doit(project, ["-a", "compile:add"]) == 0  # the knob is an input now
    capsys.readouterr()
    assert run_doit(project, []) == 0
    assert check_stamp(project) is None
    capsys.readouterr()
    assert run_doit(project, []) == 0
    assert "compile:add: input knobs/add.txt changed" in capsys.readouterr().out


def test_no_stamp_with_a_broken_config(project: Path) -> None:
    (project / "configs" / "relu.toml").write_text("source = 3\n")
    proc = doit_cli(project)
    assert proc.returncode == 1 and check_stamp(project) is None
    proc = doit_cli(project)
    assert proc.returncode == 1 and "FAILED relu: config: " in proc.stdout
