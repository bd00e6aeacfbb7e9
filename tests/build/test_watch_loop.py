"""Watch mode as the compiler loop (issue 12, item 3): real builds of the example project.

A rebuilt compiler recompiles, rebuilds and checks every model that uses it, and each cycle
prints a regression table against the one before; a broken config is reported and the other
models keep building.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ane_build.build.regress import ModelSnapshot, regression_table
from ane_build.build.runner import run_doit, watch_project
from tests.helpers import EXAMPLE_MODELS, interruptible, sha256_file, wait_for


@pytest.fixture
def watching(project: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """``watch_project`` in a thread, with no initial build; stopped after the test."""
    assert run_doit(project, []) == 0
    stop = threading.Event()
    thread = threading.Thread(
        target=watch_project, args=(project,), kwargs={"build_first": False, "stop": stop}
    )
    thread.start()
    time.sleep(0.5)  # the observers start
    yield stop
    stop.set()
    thread.join(30)
    assert not thread.is_alive()


def containers(root: Path) -> dict[str, str]:
    return {m: sha256_file(root / "build" / f"{m}_ane.onnx") for m in EXAMPLE_MODELS}


def test_a_rebuilt_compiler_rebuilds_and_checks_every_model_it_compiles(
    project: Path, watching: threading.Event, capsys: pytest.CaptureFixture[str]
) -> None:
    before = containers(project)
    tool = project / "tools" / "example_compiler.py"
    tmp = tool.with_name(".example_compiler.py.tmp")
    tmp.write_text(tool.read_text().replace("WEIGHTS = 4096", "WEIGHTS = 8192"))
    tmp.replace(tool)  # how a build system puts a new binary in place
    wait_for(
        "every container rebuilt",
        lambda: all(containers(project)[m] != before[m] for m in EXAMPLE_MODELS),
        timeout=60,
    )
    out = wait_for("the regression table", lambda: _table(capsys), timeout=30)
    rows = {line.split()[0]: line.split() for line in out[2:]}
    assert sorted(rows) == EXAMPLE_MODELS
    for cells in rows.values():
        assert cells[1:5] == ["ok", "changed", "PASS", "0.000e+00"], cells


def test_a_broken_config_fails_only_its_model(
    project: Path, watching: threading.Event, capsys: pytest.CaptureFixture[str]
) -> None:
    relu = project / "configs" / "relu.toml"
    relu.write_text("source = [\n")
    wait_for("relu's failure", lambda: "FAILED relu: config: " in _out(capsys), timeout=60)
    before = sha256_file(project / "build" / "add_ane.onnx")
    add = project / "configs" / "add.toml"
    add.write_text(add.read_text() + 'toolchain = "anecc 7"\n')
    wait_for(
        "add rebuilt while relu is broken",
        lambda: sha256_file(project / "build" / "add_ane.onnx") != before,
        timeout=60,
    )
    relu.write_text('source = "models/relu.onnx"\ntoolchain = "fixed"\n')
    wait_for(
        "relu rebuilt once fixed",
        lambda: b"fixed" in (project / "build" / "relu_ane.onnx").read_bytes(),
        timeout=60,
    )


_seen: list[str] = []


def _out(capsys: pytest.CaptureFixture[str]) -> str:
    _seen.append(capsys.readouterr().out)
    return "".join(_seen)


def _table(capsys: pytest.CaptureFixture[str]) -> list[str] | None:
    lines = _out(capsys).splitlines()
    starts = [
        i for i, line in enumerate(lines) if line.split()[:3] == ["model", "compile", "container"]
    ]
    for start in reversed(starts):
        if lines[start].split()[3:5] == ["check", "max"]:
            table = lines[start : start + 2 + len(EXAMPLE_MODELS)]
            if len(table) == 2 + len(EXAMPLE_MODELS):
                _seen.clear()
                return table
    return None


def test_a_config_broken_at_start_is_reported_and_the_rest_is_watched(project: Path) -> None:
    (project / "configs" / "relu.toml").write_text("source = [\n")
    proc = interruptible(project, "-m", "doit", "watch", "--poll")
    try:
        built = [project / "build" / f"{m}_ane.onnx" for m in ("add", "concat", "sigmoid")]
        wait_for("the initial build", lambda: all(p.exists() for p in built), timeout=90)
        time.sleep(1.0)  # its deploys and summary
        source = project / "models" / "sigmoid.onnx"
        before = sha256_file(project / "build" / "sigmoid_ane.onnx")
        (project / "configs" / "sigmoid.toml").write_text(
            'source = "models/sigmoid.onnx"\ntoolchain = "anecc 9"\n'
        )
        wait_for(
            "sigmoid rebuilt",
            lambda: sha256_file(project / "build" / "sigmoid_ane.onnx") != before,
            timeout=90,
        )
        assert source.exists()
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "FAILED relu: config: configs/relu.toml: " in out
    assert "Traceback" not in err


def test_no_initial_build_is_an_option_of_both_commands(project: Path) -> None:
    for command in (["-m", "doit", "watch"], ["-m", "ane_build", "watch"]):
        proc = interruptible(project, *command, "--no-initial-build", "--project", str(project))
        try:
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.1)
            assert proc.poll() is None, proc.communicate()
        finally:
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130 and "watching" in err, err
        assert not (project / "build").exists(), command


def test_the_regression_table_compares_cycles() -> None:
    before = {
        "a": ModelSnapshot(True, "x", True, 1e-3),
        "b": ModelSnapshot(True, "y", True, 1e-3),
        "c": ModelSnapshot(None, "z", None, None),
    }
    after = {
        "a": ModelSnapshot(True, "x2", True, 5e-4),
        "b": ModelSnapshot(False, "y", False, 2.0),
        "c": ModelSnapshot(None, "z", True, 1e-3),
    }
    lines = regression_table(before, after, ["a", "b", "c"])
    assert lines[0].split() == ["model", "compile", "container", "check", "max", "err"]
    rows = {line.split()[0]: line.split(None, 1)[1].split("  ") for line in lines[2:]}
    assert [c.strip() for c in rows["a"] if c.strip()] == [
        "ok",
        "changed",
        "PASS",
        "5.000e-04 (better)",
    ]
    b = " ".join(lines[3].split())
    assert b == "b FAILED (was ok) same FAIL (was PASS) 2.000e+00 (worse)", b
    assert " ".join(lines[4].split()) == "c - same PASS 1.000e-03 (new)"
