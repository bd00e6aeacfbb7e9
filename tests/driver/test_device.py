import errno
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ane_build.driver import uapi
from ane_build.driver.backend import OsBackend
from ane_build.driver.device import ANEDevice, open_device
from ane_build.driver.simulator import SimulatedKernel
from ane_build.driver.uapi import PAGE_SIZE
from ane_build.errors import (
    AneDeviceError,
    AneError,
    BufferObjectError,
    DeviceNotFoundError,
    SubmitValidationError,
)
from ane_build.formats.microcode import build_bootstrap
from ane_build.synthetic.chains import make_chain

MICROCODE = make_chain(2)
TD = 0x274


def _program(dev: ANEDevice):
    cmd = dev.allocate(len(MICROCODE) + 1)
    btsp = dev.allocate(TD)
    cmd.write(MICROCODE)
    btsp.write(build_bootstrap(MICROCODE, TD))
    return cmd, btsp


def test_discovery_skips_foreign_nodes_and_never_sends_them_ane_ioctls() -> None:
    kernel = SimulatedKernel(
        nodes={
            "/dev/accel/accel0": "amdxdna",
            "/dev/accel/accel1": errno.EACCES,
            "/dev/dri/renderD128": "asahi",
            "/dev/dri/renderD129": "ane",
        }
    )
    with ANEDevice.open(backend=kernel) as dev:
        assert dev.path == "/dev/dri/renderD129"
        assert dev.driver_name == "ane"
        cmd, btsp = _program(dev)
        dev.submit(tsk_size=len(MICROCODE), td_count=2, td_size=TD, handles={0: cmd}, btsp=btsp)
        cmd.close()
        btsp.close()
    foreign = [(p, name) for p, name in kernel.ioctl_log if p != "/dev/dri/renderD129"]
    assert foreign == [
        ("/dev/accel/accel0", "DRM_IOCTL_VERSION"),
        ("/dev/dri/renderD128", "DRM_IOCTL_VERSION"),
    ]
    assert kernel.open_fds == 0 and kernel.live_bos == 0


def test_not_found_lists_every_candidate_with_permission_hint() -> None:
    kernel = SimulatedKernel(
        nodes={"/dev/accel/accel0": errno.EACCES, "/dev/dri/renderD128": "asahi"}
    )
    with pytest.raises(DeviceNotFoundError) as info:
        ANEDevice.open(backend=kernel)
    text = str(info.value)
    assert "/dev/accel/accel0: EACCES" in text and "udev" in text and 'SUBSYSTEM=="accel"' in text
    assert "/dev/dri/renderD128: driver 'asahi', not 'ane'" in text
    assert kernel.open_fds == 0


def test_version_failure_is_reported_not_fatal() -> None:
    kernel = SimulatedKernel(nodes={"/dev/accel/accel0": "ane", "/dev/accel/accel1": "ane"})
    kernel.inject_fault("VERSION", errno.EIO)
    with ANEDevice.open(backend=kernel) as dev:
        assert dev.path == "/dev/accel/accel1"
    assert kernel.open_fds == 0


def test_explicit_path_is_verified_too() -> None:
    kernel = SimulatedKernel(nodes={"/dev/dri/renderD128": "asahi"})
    with pytest.raises(DeviceNotFoundError, match="driver 'asahi'"):
        ANEDevice.open("/dev/dri/renderD128", backend=kernel)
    assert [name for _, name in kernel.ioctl_log] == ["DRM_IOCTL_VERSION"]


def test_no_nodes_at_all() -> None:
    with pytest.raises(DeviceNotFoundError, match="no device nodes"):
        ANEDevice.open(backend=SimulatedKernel(nodes={}))


def test_os_backend_lists_nodes_in_numeric_order() -> None:
    nodes = OsBackend().nodes()
    accel = [n for n in nodes if n.startswith("/dev/accel/")]
    assert nodes[: len(accel)] == accel


def test_allocate_rounds_and_maps() -> None:
    with ANEDevice.simulated() as dev, dev.allocate(100) as bo:
        assert bo.size == PAGE_SIZE
        assert bo.write(b"hello", offset=10) == 5
        assert bo.read(5, offset=10) == b"hello"
        assert dev.kernel is not None and dev.kernel.bo_bytes(bo.handle)[10:15] == b"hello"
        bo.zero()
        assert bo.read() == bytes(PAGE_SIZE)
        with pytest.raises(BufferObjectError, match="out of bounds"):
            bo.write(b"x" * 10, offset=PAGE_SIZE - 5)
        with pytest.raises(BufferObjectError):
            bo.read(1, offset=PAGE_SIZE)


def test_close_is_idempotent_and_use_after_close_fails() -> None:
    dev = ANEDevice.simulated()
    kernel = dev.kernel
    assert kernel is not None
    bo = dev.allocate(1)
    bo.close()
    bo.close()
    with pytest.raises(BufferObjectError, match="closed"):
        bo.write(b"x")
    with pytest.raises(SubmitValidationError, match="not a live buffer object"):
        cmd = dev.allocate(PAGE_SIZE)
        try:
            dev.submit(tsk_size=1, td_count=1, td_size=TD, handles={0: cmd}, btsp=bo)
        finally:
            cmd.close()
    dev.close()
    dev.close()
    with pytest.raises(AneDeviceError) as info:
        dev.allocate(1)
    assert info.value.errno == errno.EBADF
    assert kernel.live_bos == 0 and kernel.open_fds == 0
    assert kernel.freed_while_mapped == 0


def test_device_close_frees_leftover_bos_with_warning() -> None:
    dev = ANEDevice.simulated()
    kernel = dev.kernel
    assert kernel is not None
    bos = [dev.allocate(10), dev.allocate(10)]
    with pytest.warns(ResourceWarning, match="still alive"):
        dev.close()
    assert all(bo.closed for bo in bos)
    assert kernel.live_bos == 0 and kernel.open_fds == 0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"td_size": 0}, "td_size"),
        ({"td_size": 6}, "td_size"),
        ({"td_count": 0}, "td_count"),
        ({"td_count": 0x10000}, "td_count"),
        ({"tsk_size": 0}, "tsk_size"),
        ({"tsk_size": PAGE_SIZE}, "tsk_size"),
        ({"flags": 2}, "flags"),
        ({"slot": 1}, "handles[1]"),
        ({"slot": 32}, "handles slot"),
        ({"slot": -1}, "handles slot"),
    ],
)
def test_submit_validates_in_userspace(kwargs: dict[str, int], field: str) -> None:
    with ANEDevice.simulated() as dev:
        kernel = dev.kernel
        assert kernel is not None
        cmd, btsp = _program(dev)
        with cmd, btsp, dev.allocate(1) as extra:
            handles = {0: cmd}
            if "slot" in kwargs:
                handles[kwargs.pop("slot")] = extra
            args = {"tsk_size": len(MICROCODE), "td_count": 2, "td_size": TD, "flags": 0}
            args.update(kwargs)
            with pytest.raises(SubmitValidationError, match=rf"submit: {field.replace('[', '.')}"):
                dev.submit(handles=handles, btsp=btsp, **args)
        assert kernel.counters["DRM_IOCTL_ANE_SUBMIT"] == 0


def test_submit_without_slot_zero() -> None:
    with (
        ANEDevice.simulated() as dev,
        dev.allocate(1) as btsp,
        dev.allocate(1) as other,
        pytest.raises(SubmitValidationError, match=r"handles\[0\]"),
    ):
        dev.submit(tsk_size=1, td_count=1, td_size=TD, handles={2: other}, btsp=btsp)


def test_kernel_error_keeps_errno_and_cause() -> None:
    with ANEDevice.simulated() as dev:
        cmd, btsp = _program(dev)
        with cmd, btsp, pytest.raises(AneDeviceError) as info:
            dev.submit(tsk_size=len(MICROCODE), td_count=3, td_size=TD, handles={0: cmd}, btsp=btsp)
    err = info.value
    assert isinstance(err, OSError) and isinstance(err, AneError)
    assert err.errno == errno.ETIMEDOUT
    assert err.call == "DRM_IOCTL_ANE_SUBMIT"
    assert isinstance(err.__cause__, OSError)
    assert "ETIMEDOUT" in str(err) and "td_size" in str(err)


def test_stock_abi_rejects_the_onnx_flag() -> None:
    with ANEDevice.simulated("stock") as dev:
        cmd, btsp = _program(dev)
        with cmd, btsp, pytest.raises(AneDeviceError) as info:
            dev.submit(
                tsk_size=len(MICROCODE),
                td_count=2,
                td_size=TD,
                handles={0: cmd},
                btsp=btsp,
                flags=uapi.ANE_SUBMIT_FLAG_ONNX,
            )
    assert info.value.errno == errno.EINVAL


def test_eintr_is_retried() -> None:
    with ANEDevice.simulated() as dev:
        kernel = dev.kernel
        assert kernel is not None
        kernel.inject_fault("BO_INIT", errno.EINTR, count=3)
        cmd, btsp = _program(dev)
        with cmd, btsp:
            kernel.inject_fault("SUBMIT", errno.EINTR)
            dev.submit(tsk_size=len(MICROCODE), td_count=2, td_size=TD, handles={0: cmd}, btsp=btsp)
        assert len(kernel.submits) == 1
        assert kernel.counters["DRM_IOCTL_ANE_SUBMIT"] == 2


@pytest.mark.parametrize("op", ["BO_INIT", "mmap"])
@pytest.mark.parametrize("err", [errno.ENOMEM, errno.ENOSPC, errno.EINVAL, errno.ENODEV])
def test_allocation_failures_leave_nothing(op: str, err: int) -> None:
    with ANEDevice.simulated() as dev:
        kernel = dev.kernel
        assert kernel is not None
        kernel.inject_fault(op, err)
        with pytest.raises(AneDeviceError) as info:
            dev.allocate(PAGE_SIZE)
        assert info.value.errno == err
        assert kernel.live_bos == 0 and dev.live_buffers == ()
    assert kernel.open_fds == 0


def test_failed_free_is_retried() -> None:
    dev = ANEDevice.simulated()
    kernel = dev.kernel
    assert kernel is not None
    bo = dev.allocate(1)
    kernel.inject_fault("BO_FREE", errno.ENODEV)
    bo.close()
    assert bo.closed and kernel.live_bos == 0
    assert kernel.counters["DRM_IOCTL_ANE_BO_FREE"] == 2
    # Two failures in a row surface; the device frees the BO when it closes.
    bo = dev.allocate(1)
    kernel.inject_fault("BO_FREE", errno.ENODEV, count=2)
    with pytest.raises(AneDeviceError):
        bo.close()
    assert not bo.closed and kernel.live_bos == 1
    with pytest.warns(ResourceWarning):
        dev.close()
    assert kernel.live_bos == 0 and kernel.open_fds == 0


def test_open_device_specs() -> None:
    with open_device("sim") as dev:
        assert dev.is_simulated and dev.kernel is not None and dev.kernel.abi == "fork"
    with open_device("sim:stock") as dev:
        assert dev.kernel is not None and dev.kernel.abi == "stock"
    with pytest.raises(ValueError, match="device must be"):
        open_device("gpu")


OPS = st.lists(
    st.tuples(
        st.sampled_from(["alloc", "free", "submit", "fault", "close_bo_twice"]),
        st.integers(0, 10),
        st.sampled_from(
            [
                errno.EINVAL,
                errno.ENOMEM,
                errno.ENOSPC,
                errno.ETIMEDOUT,
                errno.EINTR,
                errno.EACCES,
                errno.ENODEV,
            ]
        ),
    ),
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(ops=OPS, close_early=st.booleans())
def test_random_sequences_never_leak(ops: list[tuple[str, int, int]], close_early: bool) -> None:
    kernel = SimulatedKernel(address_space=8 * PAGE_SIZE)
    rng = random.Random(len(ops))
    dev = ANEDevice.open(backend=kernel)
    live = []
    try:
        for op, n, err in ops:
            try:
                if op == "alloc":
                    live.append(dev.allocate(1 + n * 5000))
                elif op == "free" and live:
                    live.pop(n % len(live)).close()
                elif op == "close_bo_twice" and live:
                    bo = live.pop(n % len(live))
                    bo.close()
                    bo.close()
                elif op == "submit" and len(live) >= 2:
                    cmd, btsp = rng.sample(live, 2)
                    if cmd.size > len(MICROCODE) and btsp.size >= TD:
                        cmd.write(MICROCODE)
                        btsp.write(build_bootstrap(MICROCODE, TD))
                    dev.submit(
                        tsk_size=min(len(MICROCODE), cmd.size - 1),
                        td_count=2,
                        td_size=TD,
                        handles={0: cmd},
                        btsp=btsp,
                    )
                elif op == "fault":
                    kernel.inject_fault(
                        rng.choice(["BO_INIT", "BO_FREE", "SUBMIT", "mmap"]), err, nth=n % 3 + 1
                    )
            except AneError:
                pass
            if close_early and n == 7:
                break
    finally:
        # Faults are for the operations above; teardown itself must then release everything.
        kernel.clear_faults()
        if dev.live_buffers:
            with pytest.warns(ResourceWarning):
                dev.close()
        else:
            dev.close()
    assert kernel.open_fds == 0
    assert kernel.live_bos == 0
    assert kernel.freed_while_mapped == 0
