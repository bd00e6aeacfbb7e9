"""The simulated fork kernel, through its ioctl, against the real kernel's 922 verdicts.

For each vector: a BO of the vector's size holds the container, an ONNX-flag submit goes through
`SimulatedKernel.ioctl`, and the errno, the submit struct as written back, and the BO's bytes
after the call equal the vector (unchanged when the kernel refuses). Skipped in a checkout
without ../shared.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
from typing import Any

import pytest

from ane_build.driver import uapi
from ane_build.driver.simulator import SimulatedKernel
from tests.conftest import load_kernel_vectors

IDS = [f"{index}-{vector['name']}" for index, vector in enumerate(load_kernel_vectors())]


def _submit(kernel: SimulatedKernel, fd: int, container: bytes, bo_size: int) -> tuple[int, Any]:
    init = uapi.drm_ane_bo_init(size=bo_size)
    kernel.ioctl(fd, uapi.DRM_IOCTL_ANE_BO_INIT, init)
    btsp = uapi.drm_ane_bo_init(size=uapi.PAGE_SIZE)
    kernel.ioctl(fd, uapi.DRM_IOCTL_ANE_BO_INIT, btsp)
    with kernel.mmap(fd, bo_size, init.offset) as mapping:
        mapping[: len(container)] = container
    req = uapi.drm_ane_submit(tsk_size=1, td_count=1, td_size=4, pad=uapi.ANE_SUBMIT_FLAG_ONNX)
    req.handles[0] = init.handle
    req.btsp_handle = btsp.handle
    try:
        kernel.ioctl(fd, uapi.DRM_IOCTL_ANE_SUBMIT, req)
        err = 0
    except OSError as exc:
        err = exc.errno or 0
    return err, (req, init.handle)


@pytest.mark.parametrize("index", range(len(IDS) or 1), ids=IDS or ["absent"])
def test_vector_through_the_ioctl(kernel_vectors: tuple[dict[str, Any], ...], index: int) -> None:
    vector = kernel_vectors[index]
    container = bytes.fromhex(vector["container_hex"])
    kernel = SimulatedKernel(evaluate=False)
    fd = kernel.open(kernel.ane_node)
    err, (req, handle) = _submit(kernel, fd, container, vector["bo_size"])
    bo = kernel.bo_bytes(handle)
    assert len(bo) == vector["bo_size"]
    untouched = container + bytes(vector["bo_size"] - len(container))
    # The vectors give the BO after an accepted rewrite; a refused BO is left as it was.
    expected = vector.get("bo_sha256_after") or hashlib.sha256(untouched).hexdigest()
    assert hashlib.sha256(bo).hexdigest() == expected
    if vector["submit"] != "OK":
        assert err == getattr(errno, vector["submit"]), (err, vector["submit"])
        # Refused by the parser: the struct is as userspace wrote it.
        assert (req.tsk_size, req.td_size, req.td_count, req.pad) == (1, 4, 1, 1)
        return
    # Translated: the struct is written back before anything else is checked; what the engine
    # then makes of the vector's microcode (it may hang: ETIMEDOUT) is not the parser's business.
    assert err in (0, errno.ETIMEDOUT), err
    written = (req.tsk_size, req.td_size, req.td_count, req.pad)
    assert written == (vector["tsk_size"], vector["td_size"], vector["td_count"], 0)
    assert ctypes.sizeof(req) == 152
