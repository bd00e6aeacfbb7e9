"""The smoke run: checks with metrics, faults caught, shards and their merge, the hardware rule."""

from __future__ import annotations

import json
import math
import os
import shutil
import stat
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from ane_build.build.junit import junit_suite, merge_junit, outcome, to_bytes
from ane_build.build.smoke import (
    Shard,
    SmokeRun,
    SmokeTarget,
    configured_samples,
    run_smoke,
    sample_files,
)
from ane_build.build.smoke_cases import SIMULATOR_NOTE, CaseSettings, latency_figures
from ane_build.check.samples import SAMPLES, SAMPLES_ENV
from ane_build.cli import main
from ane_build.driver.device import ANEDevice
from ane_build.errors import ConfigError, InvalidArgumentError
from ane_build.synthetic.chains import SYNTHETIC_MARK
from tests.helpers import (
    EXAMPLE_PROGRAMS,
    example_project,
    graph_model,
    io_slots,
    synthetic_container,
)

SHAPE = (1, 8, 1, 1)


def container(tmp_path: Path, name: str, op: str = "Relu", toolchain: str | None = None) -> Path:
    source = graph_model(tmp_path / f"{name}.onnx", [(op, "y")], SHAPE)
    out = tmp_path / f"{name}_ane.onnx"
    return synthetic_container(source, out, io_slots(["x"], ["y"], SHAPE), toolchain=toolchain)


@pytest.fixture
def targets(tmp_path: Path) -> list[SmokeTarget]:
    """Checkable models, one whose container is missing (a failure) and nothing else."""
    found = [
        SmokeTarget(f"m{i}", container(tmp_path, f"m{i}", op))
        for i, op in enumerate(["Relu", "Sigmoid", "Neg", "Relu", "Abs", "Sigmoid"])
    ]
    return [*found, SmokeTarget("gone", tmp_path / "gone_ane.onnx")]


def junit_of(run: SmokeRun) -> ET.Element:
    return junit_suite(run.cases, run.properties())


def cases_of(suite: ET.Element) -> list[tuple[str, str, str]]:
    return [(c.get("classname", ""), c.get("name", ""), outcome(c)) for c in suite.iter("testcase")]


def counts_of(suite: ET.Element) -> dict[str, str | None]:
    return {k: suite.get(k) for k in ("tests", "failures", "errors", "skipped")}


def properties(case: ET.Element) -> dict[str, str]:
    return {p.get("name", ""): p.get("value", "") for p in case.findall("properties/property")}


# --- shards -------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["0/2", "3/2", "a/b", "2", "1/0", "-1/2", "1/2/3"])
def test_a_bad_shard_is_refused_naming_it(text: str) -> None:
    with pytest.raises(InvalidArgumentError, match=f"--shard '{text}'"):
        Shard.parse(text)


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5])
def test_every_name_is_in_exactly_one_shard_and_stays_there(count: int) -> None:
    names = [f"model_{i}" for i in range(60)]
    shards = [Shard.parse(f"{k}/{count}") for k in range(1, count + 1)]
    owners = {name: [s.index for s in shards if s.holds(name)] for name in names}
    assert all(len(found) == 1 for found in owners.values()), owners
    if count > 1:
        # A hash, not a position: all shards get some of 60 names.
        assert {found[0] for found in owners.values()} == set(range(1, count + 1))
    # Adding names (before and after, alphabetically) moves none of the others.
    more = ["aaa", *names, "zzz"]
    again = {name: [s.index for s in shards if s.holds(name)] for name in more}
    assert all(again[name] == owners[name] for name in names)


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5])
def test_merged_shards_equal_a_one_runner_run(
    tmp_path: Path, targets: list[SmokeTarget], count: int
) -> None:
    mystery = tmp_path / "mystery.ane"  # no reference graph is known: a skipped case
    with ANEDevice.simulated() as dev:
        whole = junit_of(run_smoke(dev, targets, samples=[mystery]))
        files = []
        for k in range(1, count + 1):
            run = run_smoke(dev, targets, samples=[mystery], shard=Shard(k, count))
            files.append(tmp_path / f"shard{k}.xml")
            files[-1].write_bytes(to_bytes(junit_of(run)))
    merged = merge_junit(files)
    assert cases_of(merged) == cases_of(whole)
    assert counts_of(merged) == counts_of(whole)
    statuses = {status for _, _, status in cases_of(whole)}
    assert statuses == {"passed", "failed", "skipped"}
    assert counts_of(whole) == {"tests": "8", "failures": "1", "errors": "0", "skipped": "1"}


# --- checks, metrics, faults --------------------------------------------------------------------


def test_metrics_and_repeat_latency_are_junit_properties(
    tmp_path: Path, targets: list[SmokeTarget]
) -> None:
    with ANEDevice.simulated() as dev:
        run = run_smoke(dev, targets[:2], settings=CaseSettings(hardware=False, repeat=4))
    suite = junit_of(run)
    assert run.passed and cases_of(suite) == [
        ("smoke.model", "m0", "passed"),
        ("smoke.model", "m1", "passed"),
    ]
    for case in suite.iter("testcase"):
        props = properties(case)
        assert props["checked"] == "numeric" and props["passed"] == "true"
        assert props["ran_on"] == "simulator" and props["repeat"] == "4"
        assert float(props["max_abs"]) == 0.0 and float(props["cosine"]) == 1.0
        assert props["output.y.passed"] == "true" and float(props["output.y.max_rel"]) == 0.0
        figures = [float(props[f"latency_{k}_ms"]) for k in ("min", "median", "p99")]
        assert 0 < figures[0] <= figures[1] <= figures[2]
        assert float(props["latency_ms"]) > 0


def test_latency_figures_are_order_statistics() -> None:
    figures = latency_figures([0.004, 0.001, 0.003, 0.002])
    assert figures == {
        "repeat": "4",
        "latency_min_ms": "1",
        "latency_median_ms": "2.5",
        "latency_p99_ms": "4",
    }
    hundred = latency_figures([i / 1000 for i in range(1, 101)])
    assert hundred["latency_p99_ms"] == "99"


def test_a_scaled_output_fails_the_case_naming_the_output(
    tmp_path: Path, targets: list[SmokeTarget]
) -> None:
    with ANEDevice.simulated(output_faults=["scale"]) as dev:
        run = run_smoke(dev, targets[:2])
    assert not run.passed
    for case in junit_of(run).iter("testcase"):
        failure = case.find("failure")
        assert failure is not None, case.get("name")
        assert failure.get("message", "").startswith("FAIL y: max abs")
        assert "worst [" in failure.get("message", "")
        assert properties(case)["output.y.passed"] == "false"
        assert float(properties(case)["max_rel"]) > 0.005


def test_a_container_without_io_is_submitted_and_said_unchecked(tmp_path: Path) -> None:
    out = synthetic_container(
        graph_model(tmp_path / "add.onnx", [("Relu", "y")], SHAPE), tmp_path / "add_ane.onnx", {}
    )
    with ANEDevice.simulated() as dev:
        run = run_smoke(dev, [SmokeTarget("add", out)])
    (case,) = run.cases
    assert case.status == "passed" and case.properties["checked"] == "submit"
    assert "outputs not checked" in case.properties["note"]
    assert "submitted in onnx mode" in case.detail


# --- the hardware rule --------------------------------------------------------------------------


def test_on_hardware_a_run_where_nothing_ran_there_fails(tmp_path: Path) -> None:
    synthetic = container(tmp_path, "fake", toolchain=f"example ({SYNTHETIC_MARK})")
    hardware = CaseSettings(hardware=True)
    with ANEDevice.simulated() as dev:
        run = run_smoke(dev, [SmokeTarget("fake", synthetic)], settings=hardware)
        sim = run_smoke(dev, [SmokeTarget("fake", synthetic)])
        real = run_smoke(
            dev,
            [SmokeTarget("fake", synthetic), SmokeTarget("m", container(tmp_path, "m"))],
            settings=hardware,
        )
    skipped, nothing = run.cases
    assert skipped.status == "skipped" and "not submitted to hardware" in skipped.message
    assert nothing.status == "failed" and nothing.classname == "smoke.run"
    assert nothing.message.startswith("no case ran on hardware (simulator, shard 1/1): 1 skipped")
    assert SAMPLES_ENV in nothing.message
    assert not run.passed and run.ran_on_hardware == 0
    # The simulator proves nothing about hardware and does not pretend to: no such rule there.
    assert sim.passed and [c.status for c in sim.cases] == ["passed"]
    # One real case on hardware is enough.
    assert real.passed and real.ran_on_hardware == 1
    assert [c.status for c in real.cases] == ["skipped", "passed"]


def test_on_hardware_an_empty_shard_fails(tmp_path: Path) -> None:
    target = SmokeTarget("m", container(tmp_path, "m"))
    owner = next(k for k in (1, 2) if Shard(k, 2).holds(f"smoke.model:{target.name}"))
    with ANEDevice.simulated() as dev:
        run = run_smoke(dev, [target], shard=Shard(3 - owner, 2), settings=CaseSettings(True))
    (case,) = run.cases
    assert case.status == "failed" and "the shard holds no case" in case.message


# --- the samples suite --------------------------------------------------------------------------


def test_samples_run_on_the_simulator_shape_only_and_say_so(anec_samples: Path) -> None:
    files = sample_files(anec_samples)
    with ANEDevice.simulated() as dev:
        run = run_smoke(dev, [], samples=files)
    assert sorted(c.name for c in run.cases) == sorted(p.name for p in files)
    assert {p.name for p in files} <= set(SAMPLES)
    assert run.passed
    for case in run.cases:
        assert case.properties["checked"] == "shape", case.name
        assert case.properties["note"] == SIMULATOR_NOTE
        assert case.properties["ran_on"] == "simulator"


def test_on_hardware_sample_numbers_are_judged(anec_samples: Path) -> None:
    # The simulator leaves a bare .anec program's outputs zero; taken for hardware, the numeric
    # samples must fail on that, and the weight-carrying ones are judged by shape only.
    with ANEDevice.simulated() as dev:
        run = run_smoke(dev, [], samples=sample_files(anec_samples), settings=CaseSettings(True))
    verdicts = {c.name: c for c in run.cases if c.classname == "smoke.sample"}
    for name, case in verdicts.items():
        if SAMPLES[name].numeric:
            assert case.status == "failed", name
            assert case.message.startswith("FAIL y: max abs"), case.message
            assert case.properties["checked"] == "numeric"
        else:
            assert case.status == "passed", name
            assert case.properties["note"] == SAMPLES[name].note
    assert run.ran_on_hardware == len(verdicts) and not run.passed


def test_samples_come_only_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SAMPLES_ENV, raising=False)
    assert configured_samples() is None and sample_files(None) == []
    monkeypatch.setenv(SAMPLES_ENV, os.fspath(tmp_path))
    with pytest.raises(ConfigError, match=f"{SAMPLES_ENV}={tmp_path}: not a folder holding .ane"):
        configured_samples()
    (tmp_path / "relu.ane").write_bytes(b"")
    assert configured_samples() == tmp_path
    assert sample_files(tmp_path) == [tmp_path / "relu.ane"]


# --- doit smoke ---------------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the example project with its synthetic inputs generated."""
    return example_project(tmp_path / "proj")


def doit_smoke(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("ANE_BUILD_ALLOW_SIM", SAMPLES_ENV)}
    environ.update(env)
    return subprocess.run(
        ["sh", "-c", 'umask 027 && exec "$0" -m doit smoke "$@"', sys.executable, *args],
        cwd=root,
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
    )


def test_smoke_refuses_the_simulator_unless_allowed(project: Path) -> None:
    proc = doit_smoke(project)
    assert proc.returncode != 0
    assert "refusing to use the simulator" in proc.stdout and "ANE_BUILD_ALLOW_SIM=1" in proc.stdout
    suite = ET.parse(project / "build" / "smoke.xml").getroot()
    assert [c.get("name") for c in suite.iter("testcase")] == ["device (1/1)"]

    proc = doit_smoke(project, "--repeat", "2", ANE_BUILD_ALLOW_SIM="1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (
        f"smoke: {len(EXAMPLE_PROGRAMS)} passed, 0 failed on the simulator, shard 1/1; "
        "0 on hardware" in proc.stdout
    )
    assert "smoke: relu: ok (" in proc.stdout and "over 2 runs" in proc.stdout
    suite = ET.parse(project / "build" / "smoke.xml").getroot()
    assert suite.get("tests") == str(len(EXAMPLE_PROGRAMS)) and suite.get("failures") == "0"
    assert [c.get("name") for c in suite.iter("testcase")] == EXAMPLE_PROGRAMS
    assert suite.find("properties/property[@name='simulated']").get("value") == "true"
    checked = {c.get("name"): properties(c)["checked"] for c in suite.iter("testcase")}
    assert checked == dict.fromkeys(EXAMPLE_PROGRAMS, "numeric")  # compiled: every one has ane.io
    for name in ("smoke.xml", "smoke.json"):
        # Written under the umask of the run (027), like every other output.
        assert stat.S_IMODE((project / "build" / name).stat().st_mode) == 0o640, name


def test_doit_smoke_fails_on_a_simulated_fault_and_names_the_output(project: Path) -> None:
    proc = doit_smoke(project, ANE_BUILD_ALLOW_SIM="1", ANE_BUILD_SIM_FAULTS="scale")
    assert proc.returncode != 0
    assert "smoke: relu: FAIL" in proc.stdout and "FAIL y: max abs" in proc.stdout
    suite = ET.parse(project / "build" / "smoke.xml").getroot()
    assert suite.get("failures") == str(len(EXAMPLE_PROGRAMS))  # LLM chunks too
    record = json.loads((project / "build" / "smoke.json").read_text())
    assert record["passed"] is False
    relu = next(c for c in record["cases"] if c["name"] == "relu")
    assert relu["status"] == "failed" and relu["properties"]["passed"] is False
    assert math.isclose(relu["properties"]["max_rel"], 0.01, rel_tol=0.1)


def test_doit_smoke_checks_each_model_with_its_config(project: Path) -> None:
    """A model's [check] table reaches smoke: its tolerance, and turning the check off."""
    with (project / "configs" / "relu.toml").open("a") as cfg:
        cfg.write("\n[check]\nrtol = 0.02\n")  # the scale fault is off by 1 %
    with (project / "configs" / "sigmoid.toml").open("a") as cfg:
        cfg.write("\n[check]\nenabled = false\n")
    proc = doit_smoke(project, ANE_BUILD_ALLOW_SIM="1", ANE_BUILD_SIM_FAULTS="scale")
    suite = ET.parse(project / "build" / "smoke.xml").getroot()
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert properties(cases["relu"])["checked"] == "numeric", proc.stdout
    assert cases["relu"].find("failure") is None, proc.stdout
    assert properties(cases["sigmoid"])["checked"] == "submit"
    assert "[check] enabled = false" in properties(cases["sigmoid"])["note"]
    numeric = [n for n, c in cases.items() if properties(c)["checked"] == "numeric"]
    failed = sorted(n for n, c in cases.items() if c.find("failure") is not None)
    assert failed == sorted(set(numeric) - {"relu"}) and proc.returncode == (1 if failed else 0)


def test_doit_smoke_shards_merge_into_the_one_runner_file(project: Path, tmp_path: Path) -> None:
    proc = doit_smoke(project, ANE_BUILD_ALLOW_SIM="1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    whole = ET.parse(project / "build" / "smoke.xml").getroot()
    files = []
    for k in (1, 2):
        proc = doit_smoke(project, "--shard", f"{k}/2", ANE_BUILD_ALLOW_SIM="1")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        files.append(tmp_path / f"{k}.xml")
        shutil.copy(project / "build" / "smoke.xml", files[-1])
    assert main(["junit-merge", str(tmp_path / "merged.xml"), *map(str, files)]) == 0
    merged = ET.parse(tmp_path / "merged.xml").getroot()
    assert cases_of(merged) == cases_of(whole) and counts_of(merged) == counts_of(whole)
    assert merged.find("properties/property[@name='shard']").get("value") == "1-2/2"

    proc = doit_smoke(project, "--shard", "3/2", ANE_BUILD_ALLOW_SIM="1")
    assert proc.returncode != 0 and "--shard '3/2': expected K/N" in proc.stdout
