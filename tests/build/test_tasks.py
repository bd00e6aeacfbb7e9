import json
import os
import signal
import time
from pathlib import Path

import pytest

from ane_build.build.context import BuildContext
from ane_build.build.reasons import why
from ane_build.build.runner import run_doit
from ane_build.container.metadata import parse_ane_metadata
from tests.helpers import (
    EXAMPLE_BUILT,
    EXAMPLE_MODELS,
    EXAMPLE_PROGRAMS,
    EXAMPLE_UP_TO_DATE,
    doit_cli,
    example_project,
    interruptible,
    make_project,
)

MODELS = EXAMPLE_MODELS


@pytest.fixture
def synth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Three models whose synthetic artefacts are files on disk (.anec, discovered, bundle)."""
    root = tmp_path / "synth"
    make_project(root, models=3, weights=4096)
    monkeypatch.chdir(root)
    return root


def build(
    root: Path, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, BuildContext]:
    ctx = BuildContext.load(root)
    code = run_doit(root, list(args), ctx)
    out = capsys.readouterr().out
    return code, out, ctx


def ran(out: str, step: str, marker: str) -> list[str]:
    return sorted(
        line.split(":")[1]
        for line in out.splitlines()
        if line.startswith(f"{step}:") and marker in line
    )


def converted(out: str) -> list[str]:
    return ran(out, "convert", ": wrote ")


def deployed(out: str) -> list[str]:
    return ran(out, "deploy", "submitted in")


def compiled(out: str) -> list[str]:
    return ran(out, "compile", ": compiled ")


def test_first_build_then_noop(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = build(project, capsys)
    assert code == 0, out
    assert compiled(out) == converted(out) == deployed(out) == EXAMPLE_PROGRAMS
    assert "simulator" in out and "not run on ANE hardware" in out
    assert "example:tiny_llama: wrote checkpoints/tiny_llama/model.safetensors" in out
    for name in MODELS:
        meta = parse_ane_metadata(project / "build" / f"{name}_ane.onnx")
        assert meta.td_count >= 1 and meta.io, name  # the example compiler's slots
        record = json.loads((project / "build" / "deploy" / f"{name}.json").read_text())
        assert record["simulated"] is True and record["model"] == name
        assert record["check"]["passed"] is True, record
    mtimes = {p: p.stat().st_mtime_ns for p in (project / "build").glob("*.onnx")}
    code, out, ctx = build(project, capsys)
    assert code == 0
    assert out.strip() == EXAMPLE_UP_TO_DATE, out
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    assert ctx.cache.bytes_read == 0
    assert all(not r for r in why(BuildContext.load(project)).values())


def test_touch_reads_each_input_once_then_never(
    synth: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build(synth, capsys)
    ctx = BuildContext.load(synth)
    inputs = {p for name in ctx.models for p in ctx.inputs(name)}
    assert len(inputs) >= 5
    for path in inputs:
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    code, out, ctx = build(synth, capsys)
    assert code == 0 and converted(out) == []
    assert ctx.cache.files_hashed == len(inputs)
    code, out, ctx = build(synth, capsys)
    assert converted(out) == []
    assert ctx.cache.bytes_read == 0 and ctx.cache.files_hashed == 0


def test_content_change_rebuilds_exactly_one(
    synth: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build(synth, capsys)
    weights = synth / "compiler-out" / "m1" / "m1_weights.bin"
    weights.write_bytes(weights.read_bytes()[::-1])
    reasons = why(BuildContext.load(synth))
    assert [r for r in reasons["m1"] if "m1_weights.bin changed" in r]
    assert all(not reasons[m] for m in ("m0", "m2"))
    code, out, _ = build(synth, capsys)
    assert code == 0
    assert converted(out) == ["m1"] and deployed(out) == ["m1"]
    assert "convert:m1: input compiler-out/m1/m1_weights.bin changed: " in out


def test_config_change_reports_old_and_new(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build(project, capsys)
    cfg = project / "configs" / "relu.toml"
    cfg.write_text(cfg.read_text() + 'toolchain = "anecc 2"\n')
    code, out, _ = build(project, capsys)
    assert code == 0, out
    assert converted(out) == ["relu"] and compiled(out) == []
    old = "'synthetic example (not real ANE code)'"
    assert f"convert:relu: config toolchain changed: {old} -> 'anecc 2'" in out
    assert parse_ane_metadata(project / "build" / "relu_ane.onnx").toolchain == "anecc 2"
    # A deploy-only change redeploys without reconverting; a check setting is one of those.
    cfg.write_text(cfg.read_text() + '\n[deploy]\nsubmit_mode = "direct"\n[check]\nseed = 3\n')
    code, out, _ = build(project, capsys)
    assert code == 0, out
    assert converted(out) == [] and deployed(out) == ["relu"]
    assert "deploy:relu: config deploy.submit_mode changed: 'onnx' -> 'direct'" in out
    assert "deploy:relu: config check.seed changed: 0 -> 3" in out


def test_discovered_artefact_added_and_removed(
    synth: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build(synth, capsys)
    extra = synth / "compiler-out" / "m1" / "m1.td.bin"
    tsk = (synth / "compiler-out" / "m1" / "m1.tsk").read_bytes()
    extra.write_bytes(tsk)
    assert any("m1.td.bin was added" in r for r in why(BuildContext.load(synth))["m1"])
    code, out, _ = build(synth, capsys)
    assert code == 0, out
    assert converted(out) == ["m1"]
    assert parse_ane_metadata(synth / "build" / "m1_ane.onnx").tile_descriptors_len == len(tsk)
    extra.unlink()
    assert any("m1.td.bin was removed" in r for r in why(BuildContext.load(synth))["m1"])
    code, out, _ = build(synth, capsys)
    assert code == 0, out
    assert converted(out) == ["m1"]
    assert parse_ane_metadata(synth / "build" / "m1_ane.onnx").tile_descriptors_len == 0


def test_output_deleted_or_edited_is_rebuilt(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build(project, capsys)
    out_relu = project / "build" / "relu_ane.onnx"
    out_relu.unlink()
    code, out, _ = build(project, capsys)
    assert code == 0, out
    assert converted(out) == ["relu"] and compiled(out) == [] and out_relu.exists()
    with open(out_relu, "ab") as f:
        f.write(b"\x00")
    assert any("was modified" in r for r in why(BuildContext.load(project))["relu"])
    code, out, _ = build(project, capsys)
    assert code == 0, out
    assert converted(out) == ["relu"]
    assert "convert:relu: output build/relu_ane.onnx was modified" in out


def test_hand_edited_compiler_output_is_recompiled(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build(project, capsys)
    anec = project / "compiler-out" / "relu" / "relu.anec"
    good = anec.read_bytes()
    anec.write_bytes(good[:-1] + b"\x01")
    assert any("relu.anec was modified" in r for r in why(BuildContext.load(project))["relu"])
    code, out, _ = build(project, capsys)
    assert code == 0, out
    assert compiled(out) == ["relu"] and converted(out) == []  # the same bytes came back
    assert anec.read_bytes() == good


def test_bad_config_fails_its_model_only(project: Path) -> None:
    (project / "configs" / "relu.toml").write_text(
        'source = "models/relu.onnx"\n[artifacts]\nanec = "x.anec"\ntd_size = -3\n'
    )
    proc = doit_cli(project)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    problem = "configs/relu.toml: artifacts.td_size: must be greater than 0 (got -3)"
    assert f"FAILED relu: config: {problem}" in proc.stdout
    assert not (project / "build" / "relu_ane.onnx").exists()
    for name in ("add", "concat", "sigmoid"):
        assert (project / "build" / f"{name}_ane.onnx").exists(), name
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "UnmetDependency" not in proc.stdout + proc.stderr


def test_list_and_clean(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build(project, capsys)
    proc = doit_cli(project, "list")
    assert proc.returncode == 0
    lines = dict(line.split(None, 1) for line in proc.stdout.splitlines())
    assert set(lines) >= {"compile", "convert", "verify", "deploy", "smoke", "orphans", "example"}
    proc = doit_cli(project, "clean")
    assert proc.returncode == 0, proc.stderr
    assert not list((project / "build").glob("*_ane.onnx"))
    assert not list((project / "build" / "deploy").glob("*.json"))
    assert not list((project / "compiler-out").glob("*"))
    proc = doit_cli(project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert EXAMPLE_BUILT in proc.stdout


def test_input_state_is_captured_before_the_action(
    synth: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ane_build.build.checker import FingerprintChecker
    from ane_build.build.context import set_context

    build(synth, capsys)
    ctx = BuildContext.load(synth)
    set_context(ctx)
    try:
        weights = synth / "compiler-out" / "m1" / "m1_weights.bin"
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
    root = example_project(tmp_path / "clone", generate=False)
    first = doit_cli(root)
    assert first.returncode == 0, first.stdout + first.stderr
    assert EXAMPLE_BUILT in first.stdout
    assert "not run on ANE hardware" in first.stdout
    second = doit_cli(root)
    assert second.returncode == 0
    assert second.stdout.strip() == EXAMPLE_UP_TO_DATE, second.stdout


def test_watch_command_rebuilds_and_exits_0_on_ctrl_c(project: Path) -> None:
    proc = interruptible(project, "-m", "ane_build", "watch")
    try:
        output = project / "build" / "relu_ane.onnx"
        deadline = time.monotonic() + 90
        while not output.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert output.exists(), "the initial build did not happen"
        cfg = project / "configs" / "relu.toml"
        cfg.write_text('toolchain = "anecc 3"\n' + cfg.read_text())
        # A cycle already under way may write the container once more from the old config
        # (under load the initial build can still be running): wait for the edit's own rebuild.
        while time.monotonic() < deadline:
            if parse_ane_metadata(output).toolchain == "anecc 3":
                break
            time.sleep(0.05)
        assert parse_ane_metadata(output).toolchain == "anecc 3"
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "watching" in err and "watch: built" in err
    assert err.rstrip().endswith("ane-build watch: interrupted") and "Traceback" not in err


def test_report_json_holds_status_reasons_timings_and_metrics(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build(project, capsys)
    report = json.loads((project / "build" / "report.json").read_text())
    n = len(EXAMPLE_PROGRAMS)
    assert report["schema"] == 1 and report["counts"] == {"models": n, "touched": n, "failed": 0}
    relu = report["models"]["relu"]
    assert relu["status"] == "ok" and relu["failed_step"] is None
    assert set(relu["steps"]) == {"compile", "convert", "verify", "deploy"}
    compile_step = relu["steps"]["compile"]
    assert compile_step["status"] == "built" and compile_step["this_run"] is True
    assert compile_step["seconds"] > 0 and compile_step["compiler_seconds"] > 0
    assert "no build record (never built here, or the state was reset)" in compile_step["reasons"]
    assert relu["check"]["passed"] is True and relu["check"]["outputs"][0]["name"] == "y"
    assert (
        relu["deploy"]["simulated"] is True and relu["container"]["path"] == "build/relu_ane.onnx"
    )
    # A later run that rebuilds one model keeps the others' last results, marked up to date.
    cfg = project / "configs" / "add.toml"
    cfg.write_text(cfg.read_text() + 'toolchain = "x"\n')
    build(project, capsys)
    report = json.loads((project / "build" / "report.json").read_text())
    assert report["counts"]["touched"] == 1
    assert report["models"]["add"]["steps"]["convert"]["status"] == "built"
    assert report["models"]["relu"]["steps"]["convert"]["status"] == "up to date"
    assert report["models"]["relu"]["check"]["passed"] is True
