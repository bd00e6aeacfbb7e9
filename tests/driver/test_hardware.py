"""The device checks again, on a real ``ane`` node (skipped when there is none)."""

from pathlib import Path

import pytest

from ane_build.cli import convert_main
from ane_build.driver.device import ANEDevice
from ane_build.run import submit_onnx_model
from tests.helpers import relu_model

pytestmark = pytest.mark.hardware


def test_discovery_finds_an_ane_node() -> None:
    with ANEDevice.open() as dev:
        assert dev.driver_name == "ane"
        assert not dev.is_simulated


def test_allocate_map_free() -> None:
    with ANEDevice.open() as dev, dev.allocate(100) as bo:
        assert bo.size >= 100 and bo.size % 16384 == 0
        bo.write(b"abc", offset=7)
        assert bo.read(3, offset=7) == b"abc"
        bo.zero()
        assert bo.read(16) == bytes(16)


def test_userspace_validation_before_the_kernel() -> None:
    with (
        ANEDevice.open() as dev,
        dev.allocate(16384) as cmd,
        dev.allocate(1) as btsp,
        pytest.raises(ValueError, match="td_size"),
    ):
        dev.submit(tsk_size=1, td_count=1, td_size=3, handles={0: cmd}, btsp=btsp)


def test_real_sample_runs_in_direct_mode(anec_samples: Path, tmp_path: Path) -> None:
    model = relu_model(tmp_path / "relu.onnx")
    assert convert_main([str(model), "--anec", str(anec_samples / "relu.ane")]) == 0
    with ANEDevice.open() as dev:
        result = submit_onnx_model(dev, tmp_path / "relu_ane.onnx", mode="direct")
    assert not result.simulated
