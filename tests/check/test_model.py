"""check_model: a program run on the simulator against its source graph, every fault caught."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ane_build.check import DEFAULT_TOLERANCE, Tolerance, check_model, save_arrays
from ane_build.driver.device import ANEDevice
from ane_build.errors import InputError
from tests.helpers import graph_model, io_slots, make_anec_bytes, make_chain, synthetic_container
from tests.helpers import write as write_file

SHAPE = (1, 2, 4, 8)


def _container(tmp_path: Path) -> Path:
    source = graph_model(tmp_path / "m.onnx", [("Sigmoid", "a"), ("Neg", "b")], SHAPE)
    return synthetic_container(source, tmp_path / "m_ane.onnx", io_slots(["x"], ["a", "b"], SHAPE))


def test_a_correct_program_passes_with_inputs_from_a_file(tmp_path: Path) -> None:
    container = _container(tmp_path)
    x = np.linspace(-3, 3, num=int(np.prod(SHAPE)), dtype=np.float32).reshape(SHAPE)
    save_arrays(tmp_path / "in.npz", {"x": x})
    with ANEDevice.simulated() as dev:
        got = check_model(dev, container, data=tmp_path / "in.npz", cache_dir=tmp_path / "c")
        again = check_model(dev, container, data=tmp_path / "in.npz", cache_dir=tmp_path / "c")
    assert got.report.passed, got.report.table()
    assert [r.name for r in got.report.outputs] == ["a", "b"]
    np.testing.assert_array_equal(got.inputs["x"], x.astype(np.float16))
    np.testing.assert_array_equal(got.outputs["b"], -x.astype(np.float16))
    assert not got.reference.cached and again.reference.cached
    assert got.engine_seconds > 0


@pytest.mark.parametrize("fault", ["bitflip", "zero", "stride", "swap", "nan", "scale"])
def test_every_output_fault_is_caught_and_named(tmp_path: Path, fault: str) -> None:
    container = _container(tmp_path)
    with ANEDevice.simulated(output_faults=[fault]) as dev:
        got = check_model(dev, container, seed=3)
    assert not got.report.passed, f"{fault} went unnoticed:\n{got.report.table()}"
    worst = got.report.worst
    assert worst is not None and worst.name in ("a", "b") and not worst.passed
    assert worst.name in worst.line()


def test_one_ulp_of_noise_passes(tmp_path: Path) -> None:
    with ANEDevice.simulated(output_faults=["ulp"]) as dev:
        got = check_model(dev, _container(tmp_path), seed=3)
    assert got.report.passed, got.report.table()


def test_a_tight_tolerance_per_output_fails_only_that_output(tmp_path: Path) -> None:
    with ANEDevice.simulated(output_faults=["ulp"]) as dev:
        got = check_model(dev, _container(tmp_path), seed=3, per_output={"a": Tolerance(0.0, 0.0)})
    verdicts = {r.name: r.passed for r in got.report.outputs}
    assert verdicts == {"a": False, "b": True}
    assert DEFAULT_TOLERANCE.atol > 0


def test_an_anec_file_needs_its_source_and_pairs_by_order(tmp_path: Path) -> None:
    anec = write_file(tmp_path / "relu.anec", make_anec_bytes(make_chain()))
    with ANEDevice.simulated() as dev:
        with pytest.raises(InputError, match="no graph to check against"):
            check_model(dev, anec)
        wrong = graph_model(tmp_path / "wrong.onnx", [("Relu", "y")], (1, 64))
        with pytest.raises(InputError, match=r"input 'input0' \(slot \d+\) is \(1, 1, 1, 77\)"):
            check_model(dev, anec, source=wrong)
        source = graph_model(tmp_path / "relu.onnx", [("Relu", "y")], (1, 77))
        got = check_model(dev, anec, source=source, seed=1)
    # The simulator has no graph for a bare .anec file: its output stays zero, and the check
    # says the program did not compute the source's relu.
    assert list(got.outputs) == ["y"] and got.outputs["y"].shape == (1, 77)
    assert not got.report.passed


def test_direct_mode_on_the_simulator_is_checked_through_the_graph(tmp_path: Path) -> None:
    with ANEDevice.simulated() as dev:
        got = check_model(dev, _container(tmp_path), seed=2, mode="direct", repeat=3)
    assert got.report.passed, got.report.table()
    assert len(got.repeat_seconds) == 3 and all(t > 0 for t in got.repeat_seconds)
