"""``ane-build run`` and ``ane-build check``: inputs by name, saved runs, exit codes 0/1/2/3."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from ane_build.check import DEFAULT_TOLERANCE, compare, load_arrays
from ane_build.check.samples import SAMPLES, write_sample_graph
from ane_build.cli import convert_main, main
from ane_build.driver.simulator.faults import FAULTS_ENV
from tests.helpers import graph_model, io_slots, synthetic_container

SHAPE = (1, 2, 4, 8)
NUMERIC = sorted(name for name, sample in SAMPLES.items() if sample.numeric)


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside any project, with the user's cache under tmp_path and no simulator faults."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(FAULTS_ENV, raising=False)


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def container(tmp_path: Path) -> Path:
    source = graph_model(tmp_path / "m.onnx", [("Sigmoid", "a"), ("Neg", "b")], SHAPE)
    return synthetic_container(source, tmp_path / "m_ane.onnx", io_slots(["x"], ["a", "b"], SHAPE))


def onnxruntime_outputs(graph: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The graph run by onnxruntime directly: the oracle the CLI's outputs must match."""
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, inputs), strict=True))


# --- run: round trips on the real samples ---------------------------------------------------------


@pytest.mark.parametrize("name", NUMERIC)
def test_run_on_every_sample_with_a_reference_graph_matches_onnxruntime(
    name: str, anec_samples: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    graph = tmp_path / "source.onnx"
    write_sample_graph(name, graph)
    built = tmp_path / "sample_ane.onnx"
    assert convert_main([str(graph), "--anec", str(anec_samples / name), "-o", str(built)]) == 0
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(7)
    given = {}
    argv = ["run", str(built), "--device", "sim", "--save", str(tmp_path / "out.npz")]
    for spec in session.get_inputs():
        given[spec.name] = rng.normal(size=spec.shape).astype(np.float16)
        np.save(tmp_path / f"{spec.name}.npy", given[spec.name])
        argv += ["--input", f"{spec.name}={tmp_path / f'{spec.name}.npy'}"]
    capsys.readouterr()
    code, out, err = cli(argv, capsys)
    assert code == 0, err
    saved = load_arrays(tmp_path / "out.npz")
    expected = onnxruntime_outputs(graph, given)
    assert set(saved) == set(given) | set(expected)
    for key, value in given.items():
        np.testing.assert_array_equal(saved[key], value)
    report = compare({k: saved[k] for k in expected}, expected, tolerance=DEFAULT_TOLERANCE)
    assert report.passed, report.table()
    assert all(key in out for key in expected) and "simulator" in out


def test_run_prints_stats_and_latency_over_repeats(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(
        ["run", str(container(tmp_path)), "--device", "sim", "--repeat", "5"], capsys
    )
    assert code == 0
    assert "over 5 run(s): min" in out and "median" in out and "p99" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:4]}
    assert set(rows) == {"a", "b"} and rows["a"][1] == "1x2x4x8"
    code, out, _ = cli(
        ["run", str(container(tmp_path)), "--device", "sim", "--repeat", "3", "--json"], capsys
    )
    report = json.loads(out)
    assert report["latency"]["runs"] == 3 and report["simulated"] is True
    assert report["latency"]["min_ms"] <= report["latency"]["median_ms"]
    assert report["latency"]["median_ms"] <= report["latency"]["p99_ms"]
    a = next(o for o in report["outputs"] if o["name"] == "a")
    assert 0 < a["min"] <= a["mean"] <= a["max"] < 1 and a["nan"] == 0  # sigmoid's range


def test_run_stats_count_nan_and_inf(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = graph_model(tmp_path / "log.onnx", [("Log", "y")], (1, 4))
    built = synthetic_container(source, tmp_path / "log_ane.onnx", io_slots(["x"], ["y"], (1, 4)))
    np.save(tmp_path / "x.npy", np.array([[-1.0, 0.0, 1.0, np.e]], np.float32))
    code, out, _ = cli(
        ["run", str(built), "--device", "sim", "--input", f"x={tmp_path / 'x.npy'}", "--json"],
        capsys,
    )
    assert code == 0
    (y,) = json.loads(out)["outputs"]
    assert (y["nan"], y["inf"]) == (1, 1)  # log(-1), log(0)
    assert y["min"] == 0.0 and abs(y["max"] - 1.0) < 1e-3


# --- run: what --save writes, --input and --data read ---------------------------------------------


def test_save_writes_what_input_and_data_read_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    built = container(tmp_path)
    first, second, third = (tmp_path / f"{n}.npz" for n in ("first", "second", "third"))
    base = ["run", str(built), "--device", "sim"]
    assert cli([*base, "--seed", "5", "--save", str(first)], capsys)[0] == 0
    assert cli([*base, "--data", str(first), "--save", str(second)], capsys)[0] == 0
    assert cli([*base, "--input", f"x={first}", "--save", str(third)], capsys)[0] == 0
    runs = [load_arrays(path) for path in (first, second, third)]
    assert list(runs[0]) == ["x", "a", "b"]
    for other in runs[1:]:
        assert set(other) == set(runs[0])
        for key, value in runs[0].items():
            np.testing.assert_array_equal(other[key], value)
    # Another seed draws other inputs: the replay above really came from the file.
    assert cli([*base, "--seed", "6", "--save", str(third)], capsys)[0] == 0
    assert not np.array_equal(load_arrays(third)["x"], runs[0]["x"])


@pytest.mark.parametrize("named", [True, False])
def test_onnx_test_data_folders_are_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], named: bool
) -> None:
    x = np.linspace(-2, 2, int(np.prod(SHAPE)), dtype=np.float32).reshape(SHAPE)
    folder = tmp_path / "model" / "test_data_set_0"
    folder.mkdir(parents=True)
    tensor = numpy_helper.from_array(x, "x" if named else "")
    (folder / "input_0.pb").write_bytes(tensor.SerializeToString())
    (folder / "output_0.pb").write_bytes(numpy_helper.from_array(-x, "b").SerializeToString())
    out = tmp_path / "out.npz"
    argv = ["run", str(container(tmp_path)), "--device", "sim", "--save", str(out)]
    assert cli([*argv, "--data", str(tmp_path / "model")], capsys)[0] == 0
    saved = load_arrays(out)
    np.testing.assert_array_equal(saved["x"], x.astype(np.float16))
    np.testing.assert_array_equal(saved["b"], (-x).astype(np.float16))


# --- run: inputs that do not fit: exit 3, named, nothing written ----------------------------------


@pytest.mark.parametrize(
    ("value", "flag", "message"),
    [
        (np.ones((1, 2, 8, 4), np.float32), "x", r"input 'x': expected shape \(1, 2, 4, 8\)"),
        (np.ones(SHAPE, np.int64), "x", "input 'x': expected float16 data, got int64"),
        (np.ones(SHAPE, np.float32), "z", "'z' is not an input of the graph; its inputs are 'x'"),
    ],
    ids=["shape", "dtype", "unknown"],
)
def test_bad_inputs_exit_3_naming_the_input(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    value: np.ndarray,
    flag: str,
    message: str,
) -> None:
    np.save(tmp_path / "in.npy", value)
    out = tmp_path / "out.npz"
    argv = ["run", str(container(tmp_path)), "--device", "sim", "--save", str(out)]
    code, stdout, err = cli([*argv, "--input", f"{flag}={tmp_path / 'in.npy'}"], capsys)
    assert code == 3, err
    assert re.search(message, err), err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and not stdout
    assert not out.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["--device", "gpu0"],
        ["--input", "x"],
        ["--input", "x=a.npy", "--input", "x=b.npy"],
        ["--repeat", "0"],
        ["--seed", "-1"],
    ],
    ids=["device", "no-file", "twice", "repeat", "seed"],
)
def test_run_usage_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", str(tmp_path / "m_ane.onnx"), *argv])
    assert info.value.code == 2
    assert "usage: ane-build run" in capsys.readouterr().err


def test_an_anec_file_in_onnx_mode_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", str(tmp_path / "relu.anec"), "--mode", "onnx"])
    assert info.value.code == 2 and "no container for --mode onnx" in capsys.readouterr().err


def test_a_bare_anec_file_runs_and_the_simulator_says_its_outputs_are_no_results(
    anec_samples: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(["run", str(anec_samples / "relu.ane"), "--device", "sim"], capsys)
    assert code == 0 and "output0" in out and "direct mode" in out
    assert "computed no outputs" in err and "not results" in err


# --- check: exit codes ----------------------------------------------------------------------------


def test_check_passes_and_reports_as_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    built = container(tmp_path)
    code, out, _ = cli(["check", str(built), "--device", "sim"], capsys)
    assert code == 0
    assert "PASS: all 2 output(s) within tolerance" in out
    assert [line.split()[:2] for line in out.splitlines()[3:5]] == [["PASS", "a"], ["PASS", "b"]]
    code, out, _ = cli(["check", str(built), "--device", "sim", "--json"], capsys)
    document = json.loads(out)
    assert code == 0 and document["passed"] is True and document["simulated"] is True
    assert [o["name"] for o in document["outputs"]] == ["a", "b"]
    assert document["reference"] == {
        "runtime": "onnxruntime",
        "cached": True,  # the first check cached it
        "fallback_reason": None,
    }


@pytest.mark.parametrize("fault", ["scale", "bitflip", "nan"])
def test_a_simulator_fault_fails_with_exit_1_naming_the_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    monkeypatch.setenv(FAULTS_ENV, fault)
    code, out, _ = cli(["check", str(container(tmp_path)), "--device", "sim"], capsys)
    assert code == 1
    verdict = out.strip().splitlines()[-1]
    assert verdict.startswith("FAIL: ") and "outside tolerance" in verdict
    assert "worst: FAIL a:" in verdict or "worst: FAIL b:" in verdict
    code, out, _ = cli(["check", str(container(tmp_path)), "--device", "sim", "--json"], capsys)
    document = json.loads(out)
    assert code == 1 and document["passed"] is False and document["worst"] in ("a", "b")


def test_ulp_noise_passes_and_a_tight_output_tolerance_fails_only_that_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FAULTS_ENV, "ulp")
    argv = ["check", str(container(tmp_path)), "--device", "sim", "--json"]
    assert cli(argv, capsys)[0] == 0
    code, out, _ = cli([*argv, "--output-tol", "a=0,0"], capsys)
    verdicts = {o["name"]: o["passed"] for o in json.loads(out)["outputs"]}
    assert code == 1 and verdicts == {"a": False, "b": True}


@pytest.mark.parametrize(
    "argv",
    [
        ["--atol", "-1"],
        ["--rtol", "nan"],
        ["--output-tol", "a=1e-3"],
        ["--output-tol", "a=1,x"],
        ["--device", "cpu"],
    ],
)
def test_check_usage_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["check", str(container(tmp_path)), *argv])
    assert info.value.code == 2


def test_an_anec_file_without_its_source_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["check", str(tmp_path / "relu.anec")])
    assert info.value.code == 2
    assert "give --source" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--output-tol", "c=1,1"], "tolerance overrides for outputs that do not exist: 'c'"),
        (["--input", "y=in.npy"], "'y' is not an input of the graph"),
        (["--data", "nothing.npz"], "nothing.npz"),
    ],
)
def test_check_bad_input_exits_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    np.save(tmp_path / "in.npy", np.ones(SHAPE, np.float32))
    code, _, err = cli(["check", str(container(tmp_path)), "--device", "sim", *argv], capsys)
    assert code == 3 and message in err and "Traceback" not in err


def test_check_saves_inputs_and_outputs_that_replay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    built = container(tmp_path)
    saved, again = tmp_path / "check.npz", tmp_path / "again.npz"
    base = ["check", str(built), "--device", "sim"]
    assert cli([*base, "--seed", "9", "--save", str(saved)], capsys)[0] == 0
    assert cli([*base, "--data", str(saved), "--save", str(again)], capsys)[0] == 0
    first, second = load_arrays(saved), load_arrays(again)
    assert list(first) == ["x", "a", "b"]
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])


# --- check: where the reference cache lives -------------------------------------------------------


def test_the_reference_cache_is_the_projects_inside_one_else_the_users(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    built = container(tmp_path)
    user = tmp_path / "xdg" / "ane_build" / "reference"
    assert cli(["check", str(built), "--device", "sim", "--no-cache"], capsys)[0] == 0
    assert not user.exists()
    assert cli(["check", str(built), "--device", "sim"], capsys)[0] == 0
    assert len(list(user.glob("*.npz"))) == 1
    project = tmp_path / "project"
    (project / "configs").mkdir(parents=True)
    (project / "models").mkdir()
    monkeypatch.chdir(project / "models")
    assert cli(["check", str(built), "--device", "sim"], capsys)[0] == 0
    assert len(list((project / ".ane_build" / "reference").glob("*.npz"))) == 1


# --- the module entry point -----------------------------------------------------------------------


def test_python_m_ane_build_check_reads_the_fault_environment(tmp_path: Path) -> None:
    built = container(tmp_path)
    env = {**os.environ, FAULTS_ENV: "zero", "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    proc = subprocess.run(
        [sys.executable, "-m", "ane_build", "check", str(built), "--device", "sim"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stderr
    assert "FAIL" in proc.stdout and "Traceback" not in proc.stderr
