"""The device on a real ``ane`` node, and real programs checked against independent references.

Tests marked ``hardware`` are skipped when no node can be opened. Real code comes from the samples
folder (``ANE_SAMPLES_DIR``, else ``../shared/anec-samples``), so a CI runner needs no checkout
of ``../shared``. The assertions the hardware tests make are run here too, on the simulator (the
same functions, the device injected) with programs the simulator can compute: built in code from
the samples' reference graphs, so they need no samples either.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ane_build.build.smoke import SmokeRun, SmokeTarget, run_smoke, sample_files
from ane_build.build.smoke_cases import CaseSettings
from ane_build.check import check_model, graph_io
from ane_build.check.samples import SAMPLES, write_sample_graph
from ane_build.driver.device import ANEDevice
from ane_build.formats.payload import IoSlot
from ane_build.formats.tiling import layout_for
from tests.helpers import synthetic_container

hardware = pytest.mark.hardware

# Written with numpy alone: neither onnxruntime nor ane_build.check decides what is right here.
ORACLES: dict[str, Callable[..., np.ndarray]] = {
    "relu.ane": lambda x: np.maximum(x, 0),
    "sigmoid.ane": lambda x: 1 / (1 + np.exp(-x)),
    "mul.ane": lambda a, b: a * b,
    "mul_macos14.ane": lambda a, b: a * b,
    "sum.ane": lambda a, b: a + b,
    "concat.ane": lambda a, b: np.concatenate([a, b], axis=1),
}
# fp16 results against float32 references: 1 fp16 step at 1.0, 4 steps relative.
ATOL, RTOL = 2.0**-10, 2.0**-8


def assert_computes(device: ANEDevice, program: Path, sample: str, tmp_path: Path) -> None:
    """``program`` on ``device`` gives what numpy computes for ``sample``'s operation."""
    graph = tmp_path / f"{sample}.onnx"
    write_sample_graph(sample, graph)
    check = check_model(device, program, source=graph, seed=11)
    args = [value.astype(np.float32) for value in check.inputs.values()]
    expected = ORACLES[sample](*args)
    (got,) = check.outputs.values()
    assert got.dtype == np.float16 and got.size == expected.size
    np.testing.assert_allclose(
        got.astype(np.float32).reshape(expected.shape), expected, atol=ATOL, rtol=RTOL
    )
    assert check.report.passed, check.report.table()


def assert_proved(run: SmokeRun) -> None:
    """A smoke run that passed with every case run on hardware, numbers judged where known."""
    failed = [f"{c.name}: {c.message}" for c in run.cases if c.status != "passed"]
    assert not failed and run.cases, failed
    assert run.ran_on_hardware == len(run.cases)
    for case in run.cases:
        props = case.properties
        if props["checked"] == "numeric":
            assert float(props["max_abs"]) <= ATOL + RTOL * 16, case.name
            assert float(props["cosine"]) > 0.999, case.name


# --- on hardware --------------------------------------------------------------------------------


@hardware
def test_discovery_finds_an_ane_node() -> None:
    with ANEDevice.open() as dev:
        assert dev.driver_name == "ane"
        assert not dev.is_simulated


@hardware
def test_allocate_map_free() -> None:
    with ANEDevice.open() as dev, dev.allocate(100) as bo:
        assert bo.size >= 100 and bo.size % 16384 == 0
        bo.write(b"abc", offset=7)
        assert bo.read(3, offset=7) == b"abc"
        bo.zero()
        assert bo.read(16) == bytes(16)


@hardware
def test_userspace_validation_before_the_kernel() -> None:
    with (
        ANEDevice.open() as dev,
        dev.allocate(16384) as cmd,
        dev.allocate(1) as btsp,
        pytest.raises(ValueError, match="td_size"),
    ):
        dev.submit(tsk_size=1, td_count=1, td_size=3, handles={0: cmd}, btsp=btsp)


@hardware
@pytest.mark.parametrize("sample", sorted(ORACLES))
def test_a_real_sample_computes_its_operation(
    anec_samples: Path, sample: str, tmp_path: Path
) -> None:
    with ANEDevice.open() as dev:
        assert not dev.is_simulated
        assert_computes(dev, anec_samples / sample, sample, tmp_path)


@hardware
def test_the_smoke_samples_suite_proves_itself_on_hardware(anec_samples: Path) -> None:
    with ANEDevice.open() as dev:
        run = run_smoke(dev, [], samples=sample_files(anec_samples))
    assert_proved(run)
    numeric = {c.name for c in run.cases if c.properties["checked"] == "numeric"}
    assert numeric == {p.name for p in sample_files(anec_samples) if SAMPLES[p.name].numeric}


# --- the same assertions on the simulator -------------------------------------------------------


def computable(sample: str, tmp_path: Path, name: str = "") -> Path:
    """A container of ``sample``'s reference graph whose outputs the simulator computes."""
    source = tmp_path / f"{name or sample}.src.onnx"
    write_sample_graph(sample, source)
    inputs, outputs = graph_io(source, dims={})
    io = {}
    for slot, (role, spec) in enumerate(
        [("output", s) for s in outputs] + [("input", s) for s in inputs], start=4
    ):
        n, c, h, w = spec.shape
        row, plane, _ = layout_for((n, c, h, w))
        io[slot] = IoSlot(
            role=role, name=spec.name, n=n, c=c, h=h, w=w, plane_stride=plane, row_stride=row
        )
    return synthetic_container(source, tmp_path / f"{name or sample}_ane.onnx", io)


@pytest.mark.parametrize("sample", sorted(ORACLES))
def test_the_reference_assertion_holds_for_a_program_that_computes_it(
    sample: str, tmp_path: Path
) -> None:
    with ANEDevice.simulated() as dev:
        assert_computes(dev, computable(sample, tmp_path), sample, tmp_path)


@pytest.mark.parametrize("fault", ["scale", "zero", "bitflip"])
def test_the_reference_assertion_catches_a_wrong_output(fault: str, tmp_path: Path) -> None:
    with ANEDevice.simulated(output_faults=[fault]) as dev, pytest.raises(AssertionError):
        assert_computes(dev, computable("sigmoid.ane", tmp_path), "sigmoid.ane", tmp_path)


def test_a_smoke_run_taken_for_hardware_proves_itself(tmp_path: Path) -> None:
    targets = [SmokeTarget(s, computable(s, tmp_path)) for s in ("relu.ane", "sum.ane")]
    with ANEDevice.simulated() as dev:
        assert_proved(run_smoke(dev, targets, settings=CaseSettings(hardware=True)))
    with ANEDevice.simulated(output_faults=["scale"]) as dev:
        faulty = run_smoke(dev, targets, settings=CaseSettings(hardware=True))
    with pytest.raises(AssertionError, match=r"relu.ane: FAIL y"):
        assert_proved(faulty)
    with ANEDevice.simulated() as dev:
        simulated = run_smoke(dev, targets)
    with pytest.raises(AssertionError):
        assert_proved(simulated)
