"""doit habits (issue 12, item 5): forget, -a, version upgrades, removed configs, external data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ane_build.build import layout
from ane_build.build.context import BuildContext
from ane_build.build.reasons import why
from ane_build.build.runner import run_doit
from ane_build.container.metadata import parse_ane_metadata
from tests.helpers import (
    EXAMPLE_COMPILER,
    EXAMPLE_UP_TO_DATE,
    doit_cli,
    doit_run,
    external_data_model,
)


@pytest.fixture
def project(built: Path) -> Path:
    """The example project, built once."""
    return built


def steps_run(out: str) -> set[str]:
    return {line[3:] for line in out.splitlines() if line.startswith(".  ")}


def test_forget_rebuilds_what_it_names(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proc = doit_cli(project, "forget", "convert:relu")
    assert proc.returncode == 0 and "forgetting convert:relu" in proc.stdout, proc.stderr
    code, out = doit_run(project, capsys)
    assert code == 0, out
    assert steps_run(out) == {"convert:relu"}
    assert "convert:relu: wrote " in out and "kept" not in out
    # Forgetting everything rebuilds everything (the compiles included).
    assert doit_cli(project, "forget", "--all").returncode == 0
    code, out = doit_run(project, capsys)
    assert code == 0
    assert {f"compile:{m}" for m in ("add", "concat", "relu", "sigmoid")} <= steps_run(out)


def test_always_rebuilds_what_it_names(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = (project / "build" / "relu_ane.onnx").stat().st_mtime_ns
    code, out = doit_run(project, capsys, "-a", "convert:relu")
    assert code == 0, out
    assert "convert:relu: rebuilt although up to date (doit -a)" in out
    assert (project / "build" / "relu_ane.onnx").stat().st_mtime_ns != before
    code, out = doit_run(project, capsys)
    assert code == 0 and out.strip() == EXAMPLE_UP_TO_DATE, out


def test_a_new_ane_build_version_rebuilds_containers(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    record = json.loads((project / ".ane_build" / "records" / "relu.convert.json").read_text())
    assert record["version"] == layout.build_version()
    monkeypatch.setattr(layout, "version", lambda _name: "99.0")
    layout.build_version.cache_clear()
    try:
        reasons = why(BuildContext.load(project))["relu"]
        old = record["version"]
        assert f"convert: ane_build version changed: {old} -> 99.0" in reasons
        code, out = doit_run(project, capsys)
        assert code == 0, out
        ran = steps_run(out)
        # Containers and deploys are ours: rebuilt. The compiler is not ours: not rerun.
        assert {f"{s}:{m}" for s in ("convert", "deploy") for m in ("relu", "add")} <= ran
        assert not any(step.startswith("compile:") for step in ran)
        code, out = doit_run(project, capsys)
        assert out.strip() == EXAMPLE_UP_TO_DATE, out
    finally:
        layout.build_version.cache_clear()


def test_removed_and_renamed_configs_leave_orphans_that_clean_removes(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    configs = project / "configs"
    (configs / "relu.toml").rename(configs / "relu2.toml")
    (configs / "add.toml").unlink()
    proc = doit_cli(project, "why")
    assert proc.returncode == 0, proc.stderr
    for name, path in (
        ("relu", "build/relu_ane.onnx"),
        ("relu", "build/deploy/relu.json"),
        ("relu", "compiler-out/relu"),
        ("add", "build/add_ane.onnx"),
    ):
        line = f"{name}: config removed or renamed: {path} would be removed by `doit clean`"
        assert line in proc.stdout, proc.stdout
    code, out = doit_run(project, capsys)
    assert code == 0, out
    assert (project / "build" / "relu2_ane.onnx").exists()
    assert "output(s) of removed or renamed configs remain (add, relu)" in out
    report = json.loads((project / "build" / "report.json").read_text())
    assert "build/relu_ane.onnx" in report["orphans"]
    proc = doit_cli(project, "clean", "orphans")
    assert proc.returncode == 0, proc.stderr
    for gone in ("build/relu_ane.onnx", "build/add_ane.onnx", "compiler-out/relu"):
        assert not (project / gone).exists(), gone
    for kept in ("build/relu2_ane.onnx", "build/sigmoid_ane.onnx", "compiler-out/relu2"):
        assert (project / kept).exists(), kept
    assert "would be removed" not in doit_cli(project, "why").stdout
    assert not list((project / ".ane_build" / "records").glob("relu.*"))


def test_external_data_is_copied_next_to_the_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "ext"
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "tools").mkdir()
    (root / "dodo.py").write_text("from ane_build.dodo import *  # noqa: F403\n")
    (root / "tools" / "compiler.py").write_bytes(EXAMPLE_COMPILER.read_bytes())
    external_data_model(root / "models" / "ext.onnx", "w.bin")
    data = root / "models" / "w.bin"
    data.write_bytes(np.ones(64, np.float32).tobytes())
    # The simulator cannot load external data from a submitted buffer, so nothing to check.
    (root / "configs" / "ext.toml").write_text(
        'source = "models/ext.onnx"\n[compile]\ncommand = ["{python}", "{tool}", "{source}", '
        '"{out}"]\ntool = "tools/compiler.py"\n[deploy]\ndevice = "sim"\n[check]\nenabled = false\n'
    )
    monkeypatch.chdir(root)
    code, out = doit_run(root, capsys)
    assert code == 0, out
    copy = root / "build" / "w.bin"
    assert copy.read_bytes() == data.read_bytes() and copy.stat().st_nlink == 1
    assert "copied external data models/w.bin -> build/w.bin" in out
    assert parse_ane_metadata(root / "build" / "ext_ane.onnx").td_count == 1
    code, out = doit_run(root, capsys)
    assert out.strip() == "summary: all 1 model(s) up to date"
    # The data is an input; its copy is an output.
    data.write_bytes(np.full(64, 2, np.float32).tobytes())
    assert any("input models/w.bin changed" in r for r in why(BuildContext.load(root))["ext"])
    code, out = doit_run(root, capsys)
    assert code == 0 and copy.read_bytes() == data.read_bytes(), out
    copy.write_bytes(b"\0" * 256)
    assert (
        "convert: external data copy build/w.bin was modified"
        in why(BuildContext.load(root))["ext"]
    )
    code, out = doit_run(root, capsys)
    assert code == 0 and copy.read_bytes() == data.read_bytes(), out
    copy.unlink()
    code, out = doit_run(root, capsys)
    assert code == 0 and copy.read_bytes() == data.read_bytes(), out
    proc = doit_cli(root, "clean", "convert")
    assert proc.returncode == 0 and not copy.exists(), proc.stdout + proc.stderr


def test_clean_in_process_returns_0_and_removes_outputs(project: Path) -> None:
    """doit's clean command returns None for success; run_doit still gives an exit status."""
    assert (project / "build" / "relu_ane.onnx").exists()
    assert run_doit(project, ["clean"]) == 0
    assert not (project / "build" / "relu_ane.onnx").exists()
