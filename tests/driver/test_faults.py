"""Device faults at every step of a deploy (issue 6, item 5), through the simulator's injection.

Each call a deploy makes (open, DRM_IOCTL_VERSION, BO_INIT, mmap, SUBMIT, BO_FREE) fails in turn,
at each of its occurrences, with each plausible errno, in both submit modes, on a device the
deploy opens itself and on one it is given. Every failure must surface as an `AneError` naming
the call and the errno, and leave no buffer object and no fd behind; EINTR is retried and the
deploy succeeds. (tests/test_submit.py covers `submit_onnx_model` alone for the BO ioctls.)
"""

from __future__ import annotations

import errno
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from ane_build.container.writer import embed_ane_metadata
from ane_build.deploy import DeployRecord, deploy_container
from ane_build.driver.device import ANEDevice
from ane_build.driver.simulator import SimulatedKernel
from ane_build.errors import AneDeviceError, AneError
from ane_build.formats.payload import IoSlot, PayloadRef
from ane_build.synthetic.chains import make_chain, make_weights
from tests.helpers import relu_model

OPS = {
    "open": "open",
    "VERSION": "DRM_IOCTL_VERSION",
    "BO_INIT": "DRM_IOCTL_ANE_BO_INIT",
    "mmap": "mmap",
    "SUBMIT": "DRM_IOCTL_ANE_SUBMIT",
    "BO_FREE": "DRM_IOCTL_ANE_BO_FREE",
}
ERRNOS = [
    errno.EINVAL,
    errno.ENOMEM,
    errno.ENOSPC,
    errno.ETIMEDOUT,
    errno.EACCES,
    errno.ENODEV,
    errno.EINTR,
]
MODES = ["onnx", "direct"]
OWNERSHIP = ["owned", "given"]  # the deploy opens (and closes) the device, or is handed one

# Combinations run, for the closing note (printed by the last test with ``pytest -s``).
COUNTS: dict[str, int] = {"combinations": 0, "errors": 0, "recovered": 0, "leaks": 0}


@pytest.fixture(scope="module")
def container(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A container with weights and four BOs (command, bootstrap, one output, one input)."""
    folder = tmp_path_factory.mktemp("faults")
    source = relu_model(folder / "m.onnx")
    output = folder / "m_ane.onnx"
    slot = {"n": 1, "c": 64, "h": 1, "w": 1, "plane_stride": 64, "row_stride": 64}
    embed_ane_metadata(
        source,
        output,
        microcode=PayloadRef.from_bytes(make_chain(2)),
        td_size=0x274,
        td_count=2,
        weights=PayloadRef.from_bytes(make_weights(3000)),
        io={4: IoSlot(role="output", name="y", **slot), 5: IoSlot(role="input", name="x", **slot)},
        tiles={0: 32768, 4: 16384, 5: 16384},
    )
    return output


def deploy(kernel: SimulatedKernel, container: Path, mode: str, ownership: str) -> DeployRecord:
    """One deploy on ``kernel``; a given device is opened before and closed after it."""
    if ownership == "owned":
        return deploy_container(
            "m",
            container,
            device_spec="sim",
            backend=kernel,
            mode=mode,  # type: ignore[arg-type]
        )
    with ANEDevice.open(backend=kernel) as dev:
        return deploy_container("m", container, device=dev, mode=mode)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def calls(container: Path) -> dict[tuple[str, str], dict[str, int]]:
    """How often one clean deploy makes each call, per mode and ownership."""
    counts = {}
    for mode in MODES:
        for ownership in OWNERSHIP:
            kernel = SimulatedKernel()
            if ownership == "given":
                # The device is opened by the caller, outside the deploy: not one of its steps.
                dev = ANEDevice.open(backend=kernel)
                kernel.counters.clear()
                deploy_container("m", container, device=dev, mode=mode)  # type: ignore[arg-type]
                seen = dict(kernel.counters)
                dev.close()
            else:
                deploy(kernel, container, mode, ownership)
                seen = dict(kernel.counters)
            counts[mode, ownership] = {op: seen.get(name, 0) for op, name in OPS.items()}
            assert kernel.live_bos == 0 and kernel.open_fds == 0
            if ownership == "given":
                assert not any(counts[mode, ownership][op] for op in _CALLER_OPS)
    return counts


# A device handed to the deploy was opened (open, DRM_IOCTL_VERSION) by its caller, before it.
_CALLER_OPS = {"open", "VERSION"}


def combinations() -> Iterator[tuple[str, str, str]]:
    for mode in MODES:
        for ownership in OWNERSHIP:
            for op in OPS:
                if ownership == "owned" or op not in _CALLER_OPS:
                    yield mode, ownership, op


def check_error(exc: AneError, op: str, err: int) -> None:
    """A clear error: the errno (by name) and the failing call, in the message."""
    text = str(exc)
    assert errno.errorcode[err] in text, text
    if op == "open":
        # Discovery reports each node it tried: "<node>: ENOMEM on open".
        assert f"{errno.errorcode[err]} on open" in text, text
    else:
        assert OPS[op] in text, text
    if isinstance(exc, AneDeviceError):
        assert exc.errno == err and exc.call == OPS[op]


@pytest.mark.parametrize(("mode", "ownership", "op"), list(combinations()))
def test_every_errno_at_every_step(
    container: Path,
    calls: dict[tuple[str, str], dict[str, int]],
    caplog: pytest.LogCaptureFixture,
    mode: str,
    ownership: str,
    op: str,
) -> None:
    steps = calls[mode, ownership][op]
    assert steps >= 1, f"a deploy makes no {op} call: the matrix is out of date"
    for nth in range(1, steps + 1):
        for err in ERRNOS:
            kernel = SimulatedKernel()
            kernel.inject_fault(op, err, nth=nth)
            caplog.clear()
            COUNTS["combinations"] += 1
            where = f"{op} #{nth} failing with {errno.errorcode[err]} ({mode}, {ownership})"
            if err == errno.EINTR:
                # Interrupted calls are retried: the deploy goes through.
                record = deploy(kernel, container, mode, ownership)
                assert record.td_count == 2 and len(kernel.submits) == 1, where
                COUNTS["recovered"] += 1
            elif op == "BO_FREE":
                # A failed free is retried once (a leaked BO stays pinned until reboot on the
                # stock driver), so one failure is survived and said aloud.
                with caplog.at_level(logging.WARNING, logger="ane_build.driver.device"):
                    deploy(kernel, container, mode, ownership)
                assert "BO_FREE of handle" in caplog.text and "retrying once" in caplog.text
                COUNTS["recovered"] += 1
            else:
                with pytest.raises(AneError) as info:
                    deploy(kernel, container, mode, ownership)
                check_error(info.value, op, err)
                assert kernel.submits == [] or op == "BO_FREE", where
                COUNTS["errors"] += 1
            assert kernel.counters["faults"] == 1, f"{where}: the fault never fired"
            leaked = kernel.live_bos + kernel.open_fds
            COUNTS["leaks"] += leaked
            assert kernel.live_bos == 0 and kernel.open_fds == 0, where


@pytest.mark.parametrize("ownership", OWNERSHIP)
@pytest.mark.parametrize("mode", MODES)
def test_a_free_that_fails_twice_is_an_error_and_the_device_still_frees_it(
    container: Path,
    calls: dict[tuple[str, str], dict[str, int]],
    mode: str,
    ownership: str,
) -> None:
    frees = calls[mode, ownership]["BO_FREE"]
    for nth in range(1, frees + 1):
        for err in ERRNOS[:-1]:
            kernel = SimulatedKernel()
            kernel.inject_fault("BO_FREE", err, nth=nth, count=2)
            COUNTS["combinations"] += 1
            with warnings.catch_warnings(record=True) as caught:
                # The device frees what its owner could not, and says so with a ResourceWarning.
                warnings.simplefilter("always", ResourceWarning)
                with pytest.raises(AneDeviceError) as info:
                    deploy(kernel, container, mode, ownership)
            check_error(info.value, "BO_FREE", err)
            assert [w for w in caught if issubclass(w.category, ResourceWarning)]
            COUNTS["errors"] += 1
            COUNTS["leaks"] += kernel.live_bos + kernel.open_fds
            assert kernel.live_bos == 0 and kernel.open_fds == 0, (nth, err)


def test_closing_a_device_frees_everything_even_when_warnings_are_errors() -> None:
    """A BO left alive at close is freed and the fd closed before the warning is raised."""
    kernel = SimulatedKernel()
    dev = ANEDevice.open(backend=kernel)
    dev.allocate(100)
    dev.allocate(20000)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        with pytest.raises(ResourceWarning, match="still alive"):
            dev.close()
    assert dev.closed and kernel.live_bos == 0 and kernel.open_fds == 0


def test_eintr_storm_past_the_retry_bound_is_an_error(container: Path) -> None:
    """Retrying EINTR is bounded: a signal storm becomes a clear error, not a hang or a leak."""
    from ane_build.driver.device import EINTR_RETRIES

    kernel = SimulatedKernel()
    kernel.inject_fault("SUBMIT", errno.EINTR, count=EINTR_RETRIES + 1)
    with pytest.raises(AneDeviceError) as info:
        deploy(kernel, container, "onnx", "owned")
    check_error(info.value, "SUBMIT", errno.EINTR)
    assert kernel.live_bos == 0 and kernel.open_fds == 0


def test_zz_report_counts() -> None:
    """Print the totals (run last in this module); they must add up."""
    print(f"\nfault injection: {COUNTS}")
    if COUNTS["combinations"]:
        assert COUNTS["errors"] + COUNTS["recovered"] == COUNTS["combinations"]
        assert COUNTS["leaks"] == 0
