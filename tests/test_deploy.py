import ctypes
import json
import mmap
from pathlib import Path

import pytest

from ane_build.container.writer import embed_ane_metadata
from ane_build.deploy import CheckSettings, deploy_container
from ane_build.driver.device import ANEDevice
from ane_build.driver.simulator import SimulatedKernel
from ane_build.errors import VerificationError
from ane_build.formats.payload import PayloadRef
from ane_build.synthetic.chains import SYNTHETIC_MARK, make_chain
from tests.helpers import graph_model, io_slots, relu_model, synthetic_container


class FakeHardware:
    """A backend that is not the simulator as far as ANEDevice can tell (it delegates to one)."""

    def __init__(self) -> None:
        self.kernel = SimulatedKernel()

    def nodes(self) -> list[str]:
        return self.kernel.nodes()

    def open(self, path: str) -> int:
        return self.kernel.open(path)

    def ioctl(self, fd: int, request: int, arg: ctypes.Structure) -> None:
        self.kernel.ioctl(fd, request, arg)

    def mmap(self, fd: int, size: int, offset: int) -> mmap.mmap:
        return self.kernel.mmap(fd, size, offset)

    def close(self, fd: int) -> None:
        self.kernel.close(fd)


def container(tmp_path: Path, toolchain: str) -> Path:
    source = relu_model(tmp_path / "m.onnx")
    out = tmp_path / "m_ane.onnx"
    embed_ane_metadata(
        source,
        out,
        microcode=PayloadRef.from_bytes(make_chain(1)),
        td_size=0x274,
        td_count=1,
        toolchain=toolchain,
    )
    return out


@pytest.mark.parametrize("mode", ["onnx", "direct"])
def test_deploy_writes_a_record(tmp_path: Path, mode: str) -> None:
    record = tmp_path / "deploy" / "m.json"
    with ANEDevice.simulated() as dev:
        rec = deploy_container(
            "m",
            container(tmp_path, "anecc"),
            device=dev,
            mode=mode,  # type: ignore[arg-type]
            record=record,
        )
        assert dev.kernel is not None and len(dev.kernel.submits) == 1
    data = json.loads(record.read_text())
    assert data == json.loads(rec.to_json())
    assert data["simulated"] is True and data["mode"] == mode and data["td_count"] == 1
    # The ioctl is one part of the run; the record keeps both (a big container's cost is the run).
    assert 0 < data["submit_ms"] < data["run_ms"]
    assert not list(record.parent.glob(".*.tmp"))


def test_synthetic_containers_stay_off_hardware(tmp_path: Path) -> None:
    hw = FakeHardware()
    with ANEDevice.open(backend=hw) as dev:
        assert not dev.is_simulated
        rec = deploy_container("m", container(tmp_path, f"example ({SYNTHETIC_MARK})"), device=dev)
        assert rec.simulated is True
        assert hw.kernel.submits == []
        real = tmp_path / "real"
        real.mkdir()
        rec = deploy_container("m", container(real, "anecc 1.2"), device=dev)
        assert rec.simulated is False and len(hw.kernel.submits) == 1
    assert hw.kernel.live_bos == 0 and hw.kernel.open_fds == 0


def test_unverifiable_container_is_not_submitted(tmp_path: Path) -> None:
    bad = tmp_path / "m_ane.onnx"
    bad.write_bytes(relu_model(tmp_path / "m.onnx").read_bytes())
    with ANEDevice.simulated() as dev:
        with pytest.raises(VerificationError):
            deploy_container("m", bad, device=dev)
        assert dev.kernel is not None and dev.kernel.counters["DRM_IOCTL_ANE_SUBMIT"] == 0


def checked_container(tmp_path: Path) -> tuple[Path, Path]:
    source = graph_model(tmp_path / "relu.onnx", [("Relu", "y")], (1, 64, 1, 1))
    out = synthetic_container(
        source, tmp_path / "relu_ane.onnx", io_slots(["x"], ["y"], (1, 64, 1, 1))
    )
    return source, out


def test_a_deploy_with_an_io_map_is_checked(tmp_path: Path) -> None:
    source, out = checked_container(tmp_path)
    record = tmp_path / "deploy" / "relu.json"
    settings = CheckSettings(source=source, seed=3, cache_dir=tmp_path / "ref")
    with ANEDevice.simulated() as dev:
        rec = deploy_container("relu", out, device=dev, record=record, check=settings)
    assert rec.report is not None and rec.report.passed and rec.check_passed is True
    data = json.loads(record.read_text())
    assert data["check"] == rec.report.to_json() and data["check_note"] is None
    assert data["check"]["outputs"][0]["name"] == "y" and data["check_ms"] > 0
    assert "report" not in data
    assert list((tmp_path / "ref").glob("*.npz"))  # the reference is cached


def test_a_failed_check_is_recorded_not_raised(tmp_path: Path) -> None:
    source, out = checked_container(tmp_path)
    record = tmp_path / "deploy" / "relu.json"
    with ANEDevice.simulated(output_faults=("scale",)) as dev:
        rec = deploy_container(
            "relu", out, device=dev, record=record, check=CheckSettings(source=source)
        )
    assert rec.check_passed is False and rec.report is not None
    worst = rec.report.worst
    assert worst is not None and worst.name == "y" and not worst.passed
    assert json.loads(record.read_text())["check"]["passed"] is False


def test_no_io_map_means_no_check_and_says_so(tmp_path: Path) -> None:
    path = container(tmp_path, "anecc")
    with ANEDevice.simulated() as dev:
        rec = deploy_container(
            "m", path, device=dev, check=CheckSettings(source=tmp_path / "m.onnx")
        )
        plain = deploy_container("m", path, device=dev)
    assert rec.check is None and rec.check_note == "cannot run or check: no ane.io"
    assert plain.check is None and plain.check_note == "not asked for"
