"""The check in the build (issue 11, item 5): every deploy compares its outputs with the source.

Faults are injected by the simulator (``ANE_BUILD_SIM_FAULTS``) into what the program returns;
each must fail the deploy task and the summary must name the model and the output, except ``ulp``
(one step of fp16 noise), which must pass.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from onnx import TensorProto, helper

from ane_build.build.runner import run_doit
from ane_build.driver.simulator.faults import FAULTS_ENV
from tests.helpers import (
    EXAMPLE_COMPILER,
    graph_model,
    save_model,
    three_outputs_model,
)

COMPILE = (
    '[compile]\ncommand = ["{python}", "{tool}", "{source}", "{out}"]\n'
    'tool = "tools/compiler.py"\n[deploy]\ndevice = "sim"\n'
)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project of a one-output and a three-output model, compiled, deployed and checked."""
    root = tmp_path_factory.mktemp("check") / "proj"
    for folder in ("configs", "models", "tools"):
        (root / folder).mkdir(parents=True)
    (root / "dodo.py").write_text("from ane_build.dodo import *  # noqa: F403\n")
    (root / "tools" / "compiler.py").write_bytes(EXAMPLE_COMPILER.read_bytes())
    graph_model(root / "models" / "relu.onnx", [("Relu", "y")], (1, 64, 1, 1))
    save_model(root / "models" / "three.onnx", three_outputs_model((1, 4, 8, 8)))
    for name in ("relu", "three"):
        (root / "configs" / f"{name}.toml").write_text(f'source = "models/{name}.onnx"\n{COMPILE}')
    proc = doit(root, "")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root


def doit(root: Path, faults: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, FAULTS_ENV: faults}
    return subprocess.run(
        [sys.executable, "-m", "doit", *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )


def deploy_record(root: Path, name: str) -> dict[str, object]:
    data = json.loads((root / "build" / "deploy" / f"{name}.json").read_text())
    assert isinstance(data, dict)
    return data


def test_a_clean_build_checks_every_model(built: Path) -> None:
    for name, outputs in (("relu", ["y"]), ("three", ["sig", "lin", "tiny"])):
        check = deploy_record(built, name)["check"]
        assert isinstance(check, dict) and check["passed"] is True, check
        assert [o["name"] for o in check["outputs"]] == outputs


@pytest.mark.parametrize(
    ("fault", "failing"),
    [
        ("bitflip", {"relu": "y", "three": None}),
        ("zero", {"relu": "y", "three": None}),
        ("stride", {"relu": "y", "three": None}),
        ("swap", {"three": None}),
        ("nan", {"relu": "y", "three": None}),
        ("scale", {"relu": "y", "three": None}),
        ("ulp", {}),
    ],
)
def test_every_fault_fails_the_deploy_naming_model_and_output(
    built: Path, fault: str, failing: dict[str, str | None]
) -> None:
    proc = doit(built, fault, "-a", "deploy")
    out = proc.stdout
    assert proc.returncode == (1 if failing else 0), out + proc.stderr
    for name in ("relu", "three"):
        check = deploy_record(built, name)["check"]
        assert isinstance(check, dict)
        if name not in failing:
            assert check["passed"] is True, (name, check)
            assert f"FAILED {name}:" not in out
            continue
        worst = check["worst"]
        assert check["passed"] is False and isinstance(worst, str)
        assert failing[name] in (None, worst)
        line = next(x for x in out.splitlines() if x.startswith(f"FAILED {name}: "))
        assert line.startswith(f"FAILED {name}: deploy: check failed: FAIL {worst}: "), line
        assert "worst" in line or "missing" in line or "NaN" in line, line
    # The next clean run passes again (the failed deploys are not remembered as done).
    proc = doit(built, "")
    assert proc.returncode == 0, proc.stdout


def test_a_program_compiled_from_another_graph_fails_the_build(tmp_path: Path) -> None:
    """The issue's case: a two-input Mul source with the .anec of a 1x1x1x77 Relu."""
    root = tmp_path / "proj"
    for folder in ("configs", "models", "tools"):
        (root / folder).mkdir(parents=True)
    (root / "dodo.py").write_text("from ane_build.dodo import *  # noqa: F403\n")
    graph_model(root / "models" / "relu.onnx", [("Relu", "y")], (1, 1, 1, 77))
    subprocess.run(
        [
            sys.executable,
            str(EXAMPLE_COMPILER),
            str(root / "models" / "relu.onnx"),
            str(root / "relu"),
        ],
        check=True,
        capture_output=True,
    )
    mul = helper.make_graph(
        [helper.make_node("Mul", ["a", "b"], ["y"])],
        "mul",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT16, [1, 64, 1, 1]) for n in "ab"],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [1, 64, 1, 1])],
    )
    save_model(
        root / "models" / "mul.onnx",
        helper.make_model(mul, opset_imports=[helper.make_opsetid("", 17)]),
    )
    (root / "configs" / "mul.toml").write_text(
        'source = "models/mul.onnx"\n[artifacts]\nanec = "relu/relu.anec"\n'
        '[deploy]\ndevice = "sim"\n'
    )
    proc = doit(root, "")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("FAILED mul: "))
    assert line.startswith("FAILED mul: verify: verification failed: "), line
    assert not (root / "build" / "deploy" / "mul.json").exists()


def test_check_settings_reach_the_check(built: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Per-output tolerances from the config decide; a typo in an output name is an error."""
    monkeypatch.chdir(built)
    cfg = built / "configs" / "three.toml"
    original = cfg.read_text()
    try:
        cfg.write_text(original + "[check]\nseed = 7\n[check.outputs.lin]\natol = 0.5\n")
        assert run_doit(built, []) == 0
        check = deploy_record(built, "three")["check"]
        assert isinstance(check, dict)
        tolerances = {o["name"]: o["tolerance"]["atol"] for o in check["outputs"]}
        assert tolerances["lin"] == 0.5 and tolerances["sig"] == 2.0**-10
        cfg.write_text(original + "[check.outputs.lni]\natol = 0.5\n")
        assert run_doit(built, []) == 1
        cfg.write_text(original + "[check]\nenabled = false\n")
        assert run_doit(built, []) == 0
        assert deploy_record(built, "three")["check"] is None
    finally:
        cfg.write_text(original)
        assert run_doit(built, []) == 0
