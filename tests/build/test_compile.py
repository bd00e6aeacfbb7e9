"""The compile step (issue 12, item 1) on the example project and its example compiler."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ane_build.build.context import BuildContext
from ane_build.build.project import load_project
from ane_build.build.reasons import why
from ane_build.container.metadata import parse_ane_metadata
from ane_build.errors import ConfigError
from tests.helpers import (
    EXAMPLE_COMPILER,
    EXAMPLE_MODELS,
    doit_cli,
    doit_run,
    save_model,
    sha256_file,
    three_outputs_model,
)


@pytest.fixture
def project(built: Path) -> Path:
    """The example project, built once."""
    return built


def compiled(out: str) -> list[str]:
    return sorted(
        line.split(":")[1]
        for line in out.splitlines()
        if line.startswith("compile:") and ": compiled " in line
    )


def add_lines(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def leftovers(root: Path) -> list[str]:
    """Folders a compile left beside its outputs (fresh or old ones)."""
    return sorted(p.name for p in (root / "compiler-out").iterdir() if p.name.startswith("."))


def test_a_failed_compile_keeps_the_last_good_build(project: Path) -> None:
    relu = {
        p: sha256_file(project / p)
        for p in (
            "build/relu_ane.onnx",
            "build/deploy/relu.json",
            "compiler-out/relu/relu.anec",
        )
    }
    # Every container goes stale (a new toolchain); relu's compiler breaks.
    defaults = project / "configs" / "defaults.toml"
    defaults.write_text(
        defaults.read_text().replace('toolchain = "synthetic', 'toolchain = "v2 synthetic')
    )
    (project / "configs" / "relu.toml").write_text(
        'source = "models/relu.onnx"\n[compile]\ncommand = ["{python}", "{tool}", "{source}", '
        '"{out}", "--fail", "scheduler crashed"]\n'
    )
    proc = doit_cli(project)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert {p: sha256_file(project / p) for p in relu} == relu
    for name in ("add", "concat", "sigmoid"):
        meta = parse_ane_metadata(project / "build" / f"{name}_ane.onnx")
        assert meta.toolchain is not None and meta.toolchain.startswith("v2 "), name
    failure = (
        "FAILED relu: compile: compiler failed: it exited with status 1; the last good "
        "artefacts in compiler-out/relu were kept"
    )
    assert failure in proc.stdout
    assert "0 already up to date, 1 FAILED" in proc.stdout
    assert "compile:relu:   command: " in proc.stdout and "--fail 'scheduler crashed'" in out
    assert "compile:relu:     example compiler: scheduler crashed" in proc.stdout  # the log tail
    log = (project / "build" / "logs" / "relu.compile.log").read_text()
    assert "example compiler: scheduler crashed" in log
    for noise in ("<function", "UnmetDependency", "Traceback", "TaskFailed", "TaskError"):
        assert noise not in out, noise
    assert leftovers(project) == []
    report = json.loads((project / "build" / "report.json").read_text())
    assert report["models"]["relu"]["failed_step"] == "compile"
    assert report["models"]["add"]["status"] == "ok"


def test_tool_content_recompiles_exactly_its_users(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = project / "tools" / "other_compiler.py"
    shutil.copy(project / "tools" / "example_compiler.py", other)
    for name in ("relu", "sigmoid"):
        add_lines(
            project / "configs" / f"{name}.toml", '\n[compile]\ntool = "tools/other_compiler.py"\n'
        )
    code, out = doit_run(project, capsys)
    assert code == 0, out
    assert compiled(out) == ["relu", "sigmoid"]  # their tool setting changed
    # A touch is no change: nothing is even hashed twice.
    st = other.stat()
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert all(not reasons for reasons in why(BuildContext.load(project)).values())
    code, out = doit_run(project, capsys)
    assert code == 0 and compiled(out) == [], out
    # A content change recompiles every model using the tool, and only those.
    add_lines(other, "# rebuilt\n")
    reasons = why(BuildContext.load(project))
    assert any(
        r.startswith("compile: tool tools/other_compiler.py changed") for r in reasons["relu"]
    )
    assert not reasons["add"] and not reasons["concat"]
    code, out = doit_run(project, capsys)
    assert code == 0, out
    assert compiled(out) == ["relu", "sigmoid"]
    assert "compile:relu: tool tools/other_compiler.py changed: size " in out
    # The same bytes came out: no container was rebuilt after the compile.
    assert "convert:" not in out


def test_compile_inputs_are_globs_and_missing_ones_fail(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add_lines(
        project / "configs" / "relu.toml", '\n[compile]\ninputs = ["tuning/{name}/**/*.json"]\n'
    )
    code, out = doit_run(project, capsys)
    assert code == 0 and compiled(out) == ["relu"], out
    knob = project / "tuning" / "relu" / "deep" / "knob.json"
    knob.parent.mkdir(parents=True)
    knob.write_text("{}")
    assert (
        "compile: input tuning/relu/deep/knob.json was added"
        in why(BuildContext.load(project))["relu"]
    )
    code, out = doit_run(project, capsys)
    assert compiled(out) == ["relu"]
    knob.write_text('{"unroll": 2}')
    code, out = doit_run(project, capsys)
    assert compiled(out) == ["relu"]
    assert "compile:relu: input tuning/relu/deep/knob.json changed" in out
    (project / "configs" / "relu.toml").write_text(
        'source = "models/relu.onnx"\n[compile]\ninputs = ["tuning/relu/missing.json"]\n'
    )
    code, out = doit_run(project, capsys)
    assert code == 1
    assert "FAILED relu: compile: compile input(s) missing: tuning/relu/missing.json" in out


def test_placeholders_env_and_arguments_reach_the_compiler_verbatim(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spy = project / "tools" / "spy.py"
    spy.write_text(
        "import json, os, sys\n"
        "out = sys.argv[2]\n"
        "json.dump({'argv': sys.argv, 'env': os.environ.get('KNOB'), 'cwd': os.getcwd()},\n"
        "          open(os.path.join(out, 'spy.json'), 'w'))\n"
        "os.execv(sys.executable, [sys.executable, sys.argv[3], sys.argv[1], out])\n"
    )
    (project / "configs" / "relu.toml").write_text(
        'source = "models/relu.onnx"\n[compile]\ntool = "tools/spy.py"\n'
        'command = ["{python}", "{tool}", "{source}", "{out}", "{root}/tools/example_compiler.py",'
        ' "$(touch pwned); {name}"]\nenv = { KNOB = "{name} in {root}" }\n'
    )
    code, out = doit_run(project, capsys)
    assert code == 0, out
    seen = json.loads((project / "compiler-out" / "relu" / "spy.json").read_text())
    assert seen["argv"][1] == str(project / "models" / "relu.onnx")
    assert Path(seen["argv"][2]).parent == project / "compiler-out"  # the fresh folder
    assert seen["argv"][4] == "$(touch pwned); relu"
    assert seen["env"] == f"relu in {project}" and seen["cwd"] == str(project)
    assert not (project / "pwned").exists()
    assert parse_ane_metadata(project / "build" / "relu_ane.onnx").io


def test_a_compiler_that_hangs_is_stopped(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "tools" / "hang.py").write_text("import time\ntime.sleep(60)\n")
    (project / "configs" / "relu.toml").write_text(
        'source = "models/relu.onnx"\n[compile]\ntool = "tools/hang.py"\n'
        'command = ["{python}", "{tool}"]\ntimeout_s = 0.5\n'
    )
    code, out = doit_run(project, capsys)
    assert code == 1
    assert (
        "FAILED relu: compile: compiler failed: it was stopped after compile.timeout_s = 0.5 s"
        in out
    )
    assert leftovers(project) == []
    assert (project / "compiler-out" / "relu" / "relu.anec").exists()


def test_a_compiler_that_writes_nothing_fails(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "configs" / "relu.toml").write_text(
        'source = "models/relu.onnx"\n[compile]\ncommand = ["{python}", "-c", "pass"]\n'
    )
    code, out = doit_run(project, capsys)
    assert code == 1
    assert "FAILED relu: compile: compiler failed: it wrote nothing into {out}" in out


def test_a_compiler_that_cannot_start(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "configs" / "relu.toml").write_text(
        'source = "models/relu.onnx"\n[compile]\ncommand = ["no-such-compiler-xyz", "{source}"]\n'
    )
    code, out = doit_run(project, capsys)
    assert code == 1
    assert "FAILED relu: compile: compiler failed: it cannot start: no-such-compiler-xyz: " in out


def test_forget_and_always_recompile(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = doit_run(project, capsys, "-a", "compile:relu")
    assert code == 0 and compiled(out) == ["relu"], out
    assert "compile:relu: rebuilt although up to date" in out
    proc = doit_cli(project, "forget", "compile:sigmoid")
    assert proc.returncode == 0, proc.stderr
    code, out = doit_run(project, capsys)
    assert code == 0 and compiled(out) == ["sigmoid"], out


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('command = "anecc -o {out}"', "compile.command: must be an array of arguments"),
        ('command = ["anecc", "{sorce}"]', "placeholder {sorce} is unknown"),
        (
            'command = ["anecc"]\noutputs = "out/{out}"',
            "compile.outputs: placeholder {out} is not available here",
        ),
        ('command = ["anecc"]\noutputs = "."', "compile.outputs: must be a path, not empty"),
        (
            'command = ["anecc"]\noutputs = "models"',
            "compile.outputs: models holds the source of model 'm'",
        ),
        ('command = ["anecc"]\nenv = { "1X" = "a" }', "'1X' is not a variable name"),
        ('command = ["anecc"]\ntimeout_s = 0', "compile.timeout_s: must be greater than 0"),
    ],
)
def test_compile_config_errors(tmp_path: Path, table: str, message: str) -> None:
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "m.toml").write_text(f'source = "models/m.onnx"\n[compile]\n{table}\n')
    with pytest.raises(ConfigError) as caught:
        load_project(tmp_path)
    assert message in str(caught.value), str(caught.value)


def test_two_models_cannot_share_a_compile_folder(tmp_path: Path) -> None:
    (tmp_path / "configs").mkdir()
    for name in ("a", "b"):
        (tmp_path / "configs" / f"{name}.toml").write_text(
            f'source = "{name}.onnx"\n[compile]\ncommand = ["c"]\noutputs = "out"\n'
        )
    project = load_project(tmp_path, strict=False)
    assert sorted(project.broken) == ["a", "b"]
    assert "compile.outputs: these models all write out" in project.broken["a"][0]


def test_example_compiler_writes_slots_that_match_the_graph(tmp_path: Path) -> None:
    from ane_build.formats.anec import read_anec

    source = save_model(tmp_path / "three.onnx", three_outputs_model((1, 2, 3, 4)))
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE_COMPILER), str(source), str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    anec = read_anec(tmp_path / "out" / "three.anec")
    roles = [(slot.role, (slot.n, slot.c, slot.h, slot.w)) for slot in anec.io.values()]
    assert roles == [("output", (1, 2, 3, 4))] * 3 + [("input", (1, 2, 3, 4))]
    assert "NOT real ANE code" in (tmp_path / "out" / "SYNTHETIC.txt").read_text()


def test_every_example_model_compiles_to_a_checked_container(project: Path) -> None:
    for name in EXAMPLE_MODELS:
        record = json.loads((project / "build" / "deploy" / f"{name}.json").read_text())
        assert record["check"]["passed"] and record["check"]["outputs"], name
