"""AneModel: load a container or an .anec file, run it by the graph's names, check every input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ane_build import AneModel, InputError
from ane_build.driver.device import ANEDevice
from ane_build.errors import AneError
from tests.helpers import (
    graph_model,
    io_slots,
    make_anec_bytes,
    make_chain,
    synthetic_container,
    write,
)

SHAPE = (1, 1, 1, 77)


def _container(tmp_path: Path, shape: tuple[int, ...] = SHAPE) -> Path:
    source = graph_model(tmp_path / "m.onnx", [("Relu", "relu_out"), ("Neg", "neg_out")], shape)
    io = io_slots(["x"], ["relu_out", "neg_out"], shape)
    # The slots keep anecc's names: pairing with the graph is by order, not by name.
    for slot, spec in io.items():
        io[slot] = spec.model_copy(update={"name": f"{spec.role}{slot}"})
    return synthetic_container(source, tmp_path / "m_ane.onnx", io)


def test_a_container_runs_by_the_graphs_names(tmp_path: Path) -> None:
    x = np.random.default_rng(1).normal(size=SHAPE).astype(np.float32)
    with ANEDevice.simulated() as dev, AneModel.load(dev, _container(tmp_path)) as model:
        assert [(i.name, i.shape, i.dtype) for i in model.inputs] == [("x", SHAPE, np.float16)]
        assert [o.name for o in model.outputs] == ["relu_out", "neg_out"]
        out = model.run({"x": x})
        half = x.astype(np.float16)
        np.testing.assert_array_equal(out["relu_out"], np.maximum(half, 0))
        np.testing.assert_array_equal(out["neg_out"], -half)
        assert out["relu_out"].dtype == np.float16 and out["relu_out"].shape == SHAPE
        assert model.last is not None and model.last.simulated and model.last.total > 0
        assert model.load_seconds > 0


def test_the_nchw_equivalent_shape_is_accepted(tmp_path: Path) -> None:
    x = np.ones((1, 77), np.float16)  # (1, 1, 1, 77) without two leading 1s
    with ANEDevice.simulated() as dev, AneModel.load(dev, _container(tmp_path)) as model:
        assert model.run({"x": x})["neg_out"].shape == SHAPE


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            {"x": np.ones((1, 77, 1, 1), np.float16)},
            r"expected shape \(1, 1, 1, 77\).*got \(1, 77, 1, 1\)",
        ),
        ({"x": np.ones(SHAPE, np.int64)}, "expected float16 or float32 data, got int64"),
        ({"x": np.ones(SHAPE, np.float64)}, "expected float16 or float32 data, got float64"),
        ({}, r"missing: \['x'\]"),
        ({"x": np.ones(SHAPE, np.float16), "z": np.ones(1)}, r"unknown: \['z'\]"),
    ],
)
def test_bad_inputs_name_what_is_wrong_and_submit_nothing(
    tmp_path: Path, given: dict[str, np.ndarray], message: str
) -> None:
    with ANEDevice.simulated() as dev, AneModel.load(dev, _container(tmp_path)) as model:
        kernel = dev.kernel
        assert kernel is not None
        with pytest.raises(InputError, match=message):
            model.run(given)
        assert kernel.counters["DRM_IOCTL_ANE_SUBMIT"] == 0


def test_nans_reach_the_engine_canonical(tmp_path: Path) -> None:
    x = np.zeros(SHAPE, np.float16)
    bits = x.reshape(-1).view(np.uint16)
    bits[0], bits[1] = 0x7C01, 0xFD00  # a signalling NaN payload, a negative one
    with ANEDevice.simulated() as dev, AneModel.load(dev, _container(tmp_path)) as model:
        model.run({"x": x})
        slot = model.inputs[0].slot
        raw = np.frombuffer(model._program.buffers[slot].view, np.uint16, count=2)
        assert raw.tolist() == [0x7E00, 0xFE00]


def test_a_program_that_does_not_match_its_graph_cannot_load(tmp_path: Path) -> None:
    source = graph_model(tmp_path / "m.onnx", [("Relu", "y")], SHAPE)
    io = io_slots(["x", "x2"], ["y"], SHAPE)  # two inputs for a one-input graph
    container = synthetic_container(source, tmp_path / "m_ane.onnx", io)
    with ANEDevice.simulated() as dev, pytest.raises(AneError, match=r"2 input\(s\).*graph has 1"):
        AneModel.load(dev, container)
    io = io_slots(["x"], ["y"], (1, 1, 1, 78))
    container = synthetic_container(source, tmp_path / "m2_ane.onnx", io)
    with ANEDevice.simulated() as dev, pytest.raises(AneError, match=r"slot 5 holds 1x1x1x78"):
        AneModel.load(dev, container)


def test_a_container_without_ane_io_says_so(tmp_path: Path) -> None:
    source = graph_model(tmp_path / "m.onnx", [("Relu", "y")], SHAPE)
    container = synthetic_container(source, tmp_path / "m_ane.onnx", {})
    with (
        ANEDevice.simulated() as dev,
        pytest.raises(AneError, match=r"cannot run or check: no ane\.io"),
    ):
        AneModel.load(dev, container)


def test_an_anec_file_runs_with_its_slot_names(tmp_path: Path) -> None:
    path = write(tmp_path / "relu.anec", make_anec_bytes(make_chain()))
    with ANEDevice.simulated() as dev, AneModel.load(dev, path) as model:
        assert [(i.name, i.shape) for i in model.inputs] == [("input0", (1, 1, 1, 77))]
        assert [(o.name, o.shape) for o in model.outputs] == [("output0", (1, 1, 1, 77))]
        out = model.run({"input0": np.ones((1, 1, 1, 77), np.float16)})
        # No graph to stand in for the microcode: the simulator leaves the output as zeroed.
        assert not out["output0"].any() and model.mode == "direct"
        with pytest.raises(InputError, match="ONNX mode"):
            AneModel.load(dev, path, mode="onnx")
