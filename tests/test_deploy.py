import ctypes
import json
import mmap
from pathlib import Path

import pytest

from ane_build.container.writer import embed_ane_metadata
from ane_build.deploy import deploy_container
from ane_build.driver.device import ANEDevice
from ane_build.driver.simulator import SimulatedKernel
from ane_build.errors import VerificationError
from ane_build.formats.payload import PayloadRef
from ane_build.synthetic.chains import SYNTHETIC_MARK, make_chain
from tests.helpers import relu_model


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
