"""The simulator's output faults: each corrupts the computed outputs exactly as documented."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ane_build.driver.device import ANEDevice, open_device
from ane_build.driver.simulator.faults import FAULTS, FAULTS_ENV, check_faults
from ane_build.errors import InvalidArgumentError
from ane_build.run import submit_onnx_model
from tests.helpers import graph_model, io_slots, synthetic_container

SHAPE = (1, 2, 3, 8)  # two planes of three rows: every stride matters


def _run(tmp_path: Path, faults: tuple[str, ...], shape: tuple[int, ...] = SHAPE) -> dict:
    source = graph_model(tmp_path / "m.onnx", [("Relu", "y"), ("Neg", "z")], shape)
    container = synthetic_container(
        source, tmp_path / "m_ane.onnx", io_slots(["x"], ["y", "z"], shape)
    )
    x = np.random.default_rng(3).normal(size=shape).astype(np.float16)
    with ANEDevice.simulated(output_faults=faults) as dev:
        outputs = submit_onnx_model(dev, container, inputs={"x": x}).outputs
    return {"x": x, "y": outputs["y"], "z": outputs["z"]}


def _ulps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    def ordered(v: np.ndarray) -> np.ndarray:
        bits = v.astype(np.float16).reshape(-1).view(np.uint16).astype(np.int32)
        return np.where(bits & 0x8000, -(bits & 0x7FFF), bits)

    return np.abs(ordered(a) - ordered(b))


def test_no_fault_gives_the_graphs_outputs(tmp_path: Path) -> None:
    r = _run(tmp_path, ())
    np.testing.assert_array_equal(r["y"], np.maximum(r["x"], 0))
    np.testing.assert_array_equal(r["z"], -r["x"])


def test_bitflip_changes_exactly_one_element_by_its_top_exponent_bit(tmp_path: Path) -> None:
    r = _run(tmp_path, ("bitflip",))
    for out, want in (("y", np.maximum(r["x"], 0)), ("z", -r["x"])):
        diff = r[out].view(np.uint16) ^ want.view(np.uint16)
        assert np.count_nonzero(diff) == 1
        assert set(np.unique(diff)) == {0, 1 << 14}


def test_zero_leaves_outputs_zero(tmp_path: Path) -> None:
    r = _run(tmp_path, ("zero",))
    assert not r["y"].any() and not r["z"].any()


def test_nan_puts_one_nan_in_each_output(tmp_path: Path) -> None:
    r = _run(tmp_path, ("nan",))
    for out, want in (("y", np.maximum(r["x"], 0)), ("z", -r["x"])):
        bad = np.isnan(r[out])
        assert bad.sum() == 1
        np.testing.assert_array_equal(r[out][~bad], want[~bad])


def test_scale_multiplies_by_1_01(tmp_path: Path) -> None:
    r = _run(tmp_path, ("scale",))
    want = (-r["x"].astype(np.float32) * 1.01).astype(np.float16)
    np.testing.assert_array_equal(r["z"], want)


def test_ulp_moves_every_nonzero_value_by_one_step(tmp_path: Path) -> None:
    r = _run(tmp_path, ("ulp",))
    want = -r["x"]
    assert set(np.unique(_ulps(r["z"], want))) == {1}
    assert np.all(np.sign(r["z"]) == np.sign(want))


def test_swap_exchanges_the_two_outputs(tmp_path: Path) -> None:
    r = _run(tmp_path, ("swap",))
    np.testing.assert_array_equal(r["y"], -r["x"])
    np.testing.assert_array_equal(r["z"], np.maximum(r["x"], 0))


@pytest.mark.parametrize("shape", [SHAPE, (1, 1, 3, 8), (1, 1, 1, 77)])
def test_stride_misplaces_elements_whatever_the_shape(
    tmp_path: Path, shape: tuple[int, ...]
) -> None:
    r = _run(tmp_path, ("stride",), shape)
    want = -r["x"]
    assert not np.array_equal(r["z"], want)
    # The values are the right ones, written in the wrong places: what is read back in the
    # right places is a subset of them (or padding).
    assert set(r["z"].reshape(-1).tolist()) <= set(want.reshape(-1).tolist()) | {0.0}


def test_fault_names_are_checked_and_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert check_faults(["scale", " nan "]) == ("scale", "nan")
    with pytest.raises(InvalidArgumentError, match=r"'flip'.*choose from bitflip"):
        check_faults(["flip"])
    with pytest.raises(InvalidArgumentError):
        ANEDevice.simulated(output_faults=["flip"])
    monkeypatch.setenv(FAULTS_ENV, "zero,scale")
    with open_device("sim") as dev:
        assert dev.kernel is not None and dev.kernel.output_faults == ("zero", "scale")
    monkeypatch.setenv(FAULTS_ENV, "bogus")
    with pytest.raises(InvalidArgumentError, match="bogus"):
        open_device("sim")
    assert set(FAULTS) == {"bitflip", "zero", "stride", "swap", "nan", "scale", "ulp"}
