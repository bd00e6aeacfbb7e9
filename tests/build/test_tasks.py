import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ane_build.build.context import BuildContext
from ane_build.build.reasons import why
from ane_build.build.runner import run_doit
from ane_build.container.metadata import parse_ane_metadata
from tests.helpers import example_project

REPO = Path(__file__).resolve().parents[2]
MODELS = ["add", "concat", "relu", "sigmoid"]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the example project with its synthetic inputs generated."""
    root = example_project(tmp_path / "proj")
    monkeypatch.chdir(root)
    return root


def build(
    root: Path, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, BuildContext]:
    ctx = BuildContext.load(root)
    code = run_doit(root, list(args), ctx)
    out = capsys.readouterr().out
    return code, out, ctx


def converted(out: str) -> list[str]:
    return sorted(
        line.split(":")[1]
        for line in out.splitlines()
        if line.startswith("convert:") and ": wrote " in line
    )


def deployed(out: str) -> list[str]:
    return sorted(
        line.split(":")[1]
        for line in out.splitlines()
        if line.startswith("deploy:") and "submitted in" in line
    )


def test_first_build_then_noop(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = build(project, capsys)
    assert code == 0, out
    assert converted(out) == MODELS
    assert deployed(out) == MODELS
    assert "simulator" in out and "not run on ANE hardware" in out
    for name in MODELS:
        meta = parse_ane_metadata(project / "build" / f"{name}_ane.onnx")
        assert meta.td_count >= 1
        record = json.loads((project / "build" / "deploy" / f"{name}.json").read_text())
        assert record["simulated"] is True and record["model"] == name
    mtimes = {p: p.stat().st_mtime_ns for p in (project / "build").glob("*.onnx")}
    code, out, ctx = build(project, capsys)
    assert code == 0
    assert converted(out) == [] and deployed(out) == []
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    assert ctx.cache.bytes_read == 0
    assert all(not r for r in why(BuildContext.load(project)).values())


def test_touch_reads_each_input_once_then_never(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build(project, capsys)
    ctx = BuildContext.load(project)
    inputs = {p for name in ctx.models for p in ctx.inputs(name)}
    assert len(inputs) >= 8
    for path in inputs:
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    code, out, ctx = build(project, capsys)
    assert code == 0 and converted(out) == []
    assert ctx.cache.files_hashed == len(inputs)
    code, out, ctx = build(project, capsys)
    assert converted(out) == []
    assert ctx.cache.bytes_read == 0 and ctx.cache.files_hashed == 0
    code, out, ctx = build(project, capsys)
    assert ctx.cache.bytes_read == 0


def test_content_change_rebuilds_exactly_one(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build(project, capsys)
    weights = project / "compiler-out" / "add" / "add_weights.bin"
    weights.write_bytes(weights.read_bytes()[::-1])
    reasons = why(BuildContext.load(project))
    assert [r for r in reasons["add"] if "add_weights.bin changed" in r]
    assert all(not reasons[m] for m in MODELS if m != "add")
    code, out, _ = build(project, capsys)
    assert code == 0
    assert converted(out) == ["add"] and deployed(out) == ["add"]
    assert "convert:add: input compiler-out/add/add_weights.bin changed: " in out
    assert "sha256" in out


def test_config_change_reports_old_and_new(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build(project, capsys)
    cfg = project / "configs" / "relu.toml"
    cfg.write_text(
        cfg.read_text().replace(
            'source = "models/relu.onnx"', 'source = "models/relu.onnx"\ntoolchain = "anecc 2"'
        )
    )
    code, out, _ = build(project, capsys)
    assert code == 0, out
    assert converted(out) == ["relu"]
    old = "'synthetic example (not real ANE code)'"
    assert f"convert:relu: config toolchain changed: {old} -> 'anecc 2'" in out
    assert parse_ane_metadata(project / "build" / "relu_ane.onnx").toolchain == "anecc 2"
    # A deploy-only change redeploys without reconverting.
    cfg.write_text(cfg.read_text() + '\n[deploy]\nsubmit_mode = "direct"\n')
    code, out, _ = build(project, capsys)
    assert code == 0, out
    assert converted(out) == [] and deployed(out) == ["relu"]
    assert "deploy:relu: config deploy.submit_mode changed: 'onnx' -> 'direct'" in out


def test_discovered_artefact_added_and_removed(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build(project, capsys)
    extra = project / "compiler-out" / "add" / "add.td.bin"
    tsk = (project / "compiler-out" / "add" / "add.tsk").read_bytes()
    extra.write_bytes(tsk)
    assert any("add.td.bin was added" in r for r in why(BuildContext.load(project))["add"])
    code, out, _ = build(project, capsys)
    assert code == 0, out
    assert converted(out) == ["add"]
    assert parse_ane_metadata(project / "build" / "add_ane.onnx").tile_descriptors_len == len(tsk)
    extra.unlink()
    assert any("add.td.bin was removed" in r for r in why(BuildContext.load(project))["add"])
    code, out, _ = build(project, capsys)
    assert code == 0, out
    assert converted(out) == ["add"]
    assert parse_ane_metadata(project / "build" / "add_ane.onnx").tile_descriptors_len == 0


def test_output_deleted_or_edited_is_rebuilt(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build(project, capsys)
    out_relu = project / "build" / "relu_ane.onnx"
    out_relu.unlink()
    code, out, _ = build(project, capsys)
    assert code == 0, out
    assert converted(out) == ["relu"] and out_relu.exists()
    with open(out_relu, "ab") as f:
        f.write(b"\x00")
    assert any("was modified" in r for r in why(BuildContext.load(project))["relu"])
    code, out, _ = build(project, capsys)
    assert code == 0, out
    assert converted(out) == ["relu"]
    assert "convert:relu: output build/relu_ane.onnx was modified" in out


def test_bad_config_fails_clearly_and_writes_nothing(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "configs" / "relu.toml").write_text(
        'source = "models/relu.onnx"\n[artifacts]\n'
        'anec = "compiler-out/relu/relu.anec"\ntd_size = -3\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "doit"], cwd=project, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0
    assert "configs/relu.toml: artifacts.td_size: must be greater than 0 (got -3)" in proc.stderr
    assert not (project / "build").exists()


def test_list_and_clean(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build(project, capsys)
    proc = subprocess.run(
        [sys.executable, "-m", "doit", "list"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0
    lines = dict(line.split(None, 1) for line in proc.stdout.splitlines())
    assert set(lines) >= {"convert", "verify", "deploy", "smoke", "summary", "example"}
    proc = subprocess.run(
        [sys.executable, "-m", "doit", "clean", "convert", "deploy"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert not list((project / "build").glob("*_ane.onnx"))
    assert not list((project / "build" / "deploy").glob("*.json"))


def test_input_state_is_captured_before_the_action(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ane_build.build.checker import FingerprintChecker
    from ane_build.build.context import set_context

    build(project, capsys)
    ctx = BuildContext.load(project)
    set_context(ctx)
    try:
        weights = project / "compiler-out" / "add" / "add_weights.bin"
        before = ctx.file_state(weights)
        assert before is not None
        # The action snapshots its inputs, then the compiler rewrites one while we build.
        ctx.snapshots[os.fspath(weights)] = before
        weights.write_bytes(b"rewritten during the build")
        checker = FingerprintChecker()
        saved = checker.get_state(os.fspath(weights), None)
        assert saved == before.to_json()
        assert checker.check_modified(os.fspath(weights), weights.stat(), saved) is True
        # A touch alone is not a change.
        ctx.snapshots.clear()
        now = checker.get_state(os.fspath(weights), None)
        os.utime(weights, ns=(0, weights.stat().st_mtime_ns + 5 * 10**9))
        assert checker.check_modified(os.fspath(weights), weights.stat(), now) is False
    finally:
        set_context(None)


def test_fresh_example_project_builds_then_noops(tmp_path: Path) -> None:
    """The README's main job: a clone with no generated inputs, `doit` twice."""
    root = tmp_path / "clone"
    root.mkdir()
    shutil.copytree(REPO / "configs", root / "configs")
    shutil.copy(REPO / "synthetic.toml", root / "synthetic.toml")
    shutil.copy(REPO / "dodo.py", root / "dodo.py")
    first = subprocess.run(
        [sys.executable, "-m", "doit"], cwd=root, capture_output=True, text=True, timeout=300
    )
    assert first.returncode == 0, first.stdout + first.stderr
    assert "4 model(s) built or deployed, 0 already up to date" in first.stdout
    assert "not run on ANE hardware" in first.stdout
    second = subprocess.run(
        [sys.executable, "-m", "doit"], cwd=root, capture_output=True, text=True, timeout=300
    )
    assert second.returncode == 0
    ran = [line for line in second.stdout.splitlines() if line.startswith(".  ")]
    assert ran == [".  summary"], second.stdout
    assert "all 4 model(s) up to date" in second.stdout


def test_watch_command_rebuilds_and_exits_0_on_ctrl_c(project: Path) -> None:
    import signal
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "ane_build", "watch"],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        output = project / "build" / "relu_ane.onnx"
        deadline = time.monotonic() + 90
        while not output.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert output.exists(), "the initial build did not happen"
        first = output.stat().st_mtime_ns
        cfg = project / "configs" / "relu.toml"
        cfg.write_text('toolchain = "anecc 3"\n' + cfg.read_text())
        while output.stat().st_mtime_ns == first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert parse_ane_metadata(output).toolchain == "anecc 3"
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "watching" in err and "watch: built" in err
    assert err.rstrip().endswith("ane-build watch: interrupted") and "Traceback" not in err
