"""`ANEDevice` and `BufferObject`: one owner for the ``ane`` device node and its buffer objects.

One typed method per ioctl, validated in userspace first, errors that keep their errno. Every
resource is released on every path. This module must not guess a node: it only talks ANE ioctls
to a node whose DRM driver name was verified to be ``ane``.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import mmap
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeVar

from .._resource import Closing
from .._typing import BytesLike
from ..errors import (
    AneDeviceError,
    AneError,
    BufferObjectError,
    DeviceNotFoundError,
    InvalidArgumentError,
    SubmitValidationError,
)
from . import uapi
from .backend import Backend, OsBackend

if TYPE_CHECKING:
    from .simulator import SimulatedKernel

log = logging.getLogger(__name__)

ANE_DRIVER_NAME = "ane"
# libdrm's drmIoctl retries EINTR and EAGAIN without bound; we bound it so a stuck signal storm
# surfaces as an error instead of a hang.
EINTR_RETRIES = 64
_VERSION_STRING_LEN = 64
_ZEROS = memoryview(bytes(1 << 20))

T = TypeVar("T")


@dataclass(frozen=True)
class DrmVersion:
    """What DRM_IOCTL_VERSION reported for a node."""

    name: str
    date: str
    desc: str
    major: int
    minor: int
    patchlevel: int


def _retry_eintr(call: Callable[[], T]) -> T:
    for _ in range(EINTR_RETRIES):
        try:
            return call()
        except InterruptedError:
            continue
    return call()


def _os_error(exc: OSError, call: str, path: str) -> AneDeviceError:
    err = exc.errno or errno.EIO
    detail = exc.strerror if exc.strerror and exc.strerror != os.strerror(err) else ""
    if err == errno.ETIMEDOUT and call == "DRM_IOCTL_ANE_SUBMIT":
        detail = "; ".join(
            filter(None, [detail, "the engine never went idle (bad microcode or td_size?)"])
        )
    return AneDeviceError(err, call, path, detail)


def _ioctl(backend: Backend, fd: int, request: int, arg: ctypes.Structure, path: str) -> None:
    name = uapi.IOCTL_NAMES.get(request, f"ioctl 0x{request:08x}")
    try:
        _retry_eintr(lambda: backend.ioctl(fd, request, arg))
    except OSError as exc:
        raise _os_error(exc, name, path) from exc


def query_version(backend: Backend, fd: int, path: str) -> DrmVersion:
    """Ask a node which DRM driver serves it (DRM_IOCTL_VERSION), the only safe first question.

    Raises:
        AneDeviceError: The ioctl failed.
    """
    buffers = [ctypes.create_string_buffer(_VERSION_STRING_LEN) for _ in range(3)]
    while True:
        ver = uapi.drm_version()
        ver.name_len, ver.date_len, ver.desc_len = (len(b) for b in buffers)
        ver.name, ver.date, ver.desc = (ctypes.addressof(b) for b in buffers)
        _ioctl(backend, fd, uapi.DRM_IOCTL_VERSION, ver, path)
        lengths = (ver.name_len, ver.date_len, ver.desc_len)
        if all(n <= len(b) for n, b in zip(lengths, buffers, strict=True)):
            break
        # The kernel reports the full lengths; ask again with room for all of it.
        buffers = [
            ctypes.create_string_buffer(max(n, len(b)))
            for n, b in zip(lengths, buffers, strict=True)
        ]
    name, date, desc = (
        b.raw[:n].decode("utf-8", "replace") for n, b in zip(lengths, buffers, strict=True)
    )
    return DrmVersion(
        name, date, desc, ver.version_major, ver.version_minor, ver.version_patchlevel
    )


def _hint_for(err: int) -> str:
    if err in (errno.EACCES, errno.EPERM):
        return (
            " (permission denied: add yourself to the group owning the node, or install a udev "
            'rule such as SUBSYSTEM=="accel", DRIVERS=="ane", MODE="0660", GROUP="render")'
        )
    return ""


class BufferObject(Closing):
    """A kernel buffer object mapped into this process. Close it (or use ``with``) to free it.

    Attributes:
        handle: The kernel handle.
        size: The size as rounded up by the kernel.
        offset: The fake mmap offset the kernel returned.
    """

    def __init__(
        self, device: ANEDevice, handle: int, size: int, offset: int, mapping: mmap.mmap
    ) -> None:
        self._device = device
        self.handle = handle
        self.size = size
        self.offset = offset
        self._mapping: mmap.mmap | None = mapping
        self._view: memoryview | None = memoryview(mapping)
        self._freed = False

    @property
    def closed(self) -> bool:
        """Whether the BO has been freed."""
        return self._freed

    @property
    def view(self) -> memoryview:
        """Writable view of the whole mapping.

        Raises:
            BufferObjectError: The BO was closed.
        """
        if self._view is None:
            raise BufferObjectError(f"buffer object {self.handle} is closed")
        return self._view

    def _range(self, offset: int, length: int, what: str) -> None:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise BufferObjectError(
                f"{what} of {length} bytes at offset {offset} is out of bounds of buffer object "
                f"{self.handle} ({self.size} bytes)"
            )

    def write(self, data: BytesLike, offset: int = 0) -> int:
        """Copy ``data`` into the BO at ``offset`` in one bulk copy; return the byte count.

        Raises:
            BufferObjectError: Closed, or the write does not fit.
        """
        src = memoryview(data).cast("B")
        view = self.view
        self._range(offset, src.nbytes, "write")
        view[offset : offset + src.nbytes] = src
        return src.nbytes

    def read(self, n: int | None = None, offset: int = 0) -> bytes:
        """Return ``n`` bytes from ``offset`` (to the end when ``n`` is None).

        Raises:
            BufferObjectError: Closed, or the read is out of bounds.
        """
        view = self.view
        n = self.size - offset if n is None else n
        self._range(offset, n, "read")
        return bytes(view[offset : offset + n])

    def zero(self, offset: int = 0, length: int | None = None) -> None:
        """Fill ``length`` bytes from ``offset`` (the rest of the BO by default) with zeros."""
        view = self.view
        length = self.size - offset if length is None else length
        self._range(offset, length, "zero")
        end = offset + length
        for pos in range(offset, end, len(_ZEROS)):
            n = min(len(_ZEROS), end - pos)
            view[pos : pos + n] = _ZEROS[:n]

    def _unmap(self) -> None:
        view, mapping = self._view, self._mapping
        self._view = self._mapping = None
        try:
            if view is not None:
                view.release()
            if mapping is not None:
                mapping.close()
        except BufferError:
            # Someone still holds a view of it (a numpy array, a slice): the pages stay mapped
            # until the last one goes, and the BO is freed all the same.
            log.warning("buffer object %d: mapping still exported; unmapped later", self.handle)

    def close(self) -> None:
        """Unmap, then BO_FREE. Idempotent; a failed free leaves the BO for the device to retry.

        Raises:
            AneDeviceError: BO_FREE failed.
        """
        if self._freed:
            return
        self._unmap()
        self._device._free_bo(self)
        self._freed = True

    def __repr__(self) -> str:
        state = "freed" if self._freed else "live"
        return f"<BufferObject handle={self.handle} size={self.size} {state}>"


@dataclass
class Submission:
    """A submit request and the buffer objects it names.

    Attributes:
        request: The struct the kernel reads and writes back into.
        handles: Slot to BO, as given.
        btsp: The bootstrap BO.
    """

    request: uapi.drm_ane_submit
    handles: dict[int, BufferObject]
    btsp: BufferObject


class ANEDevice(Closing):
    """An open ``ane`` device node: allocates BOs and submits work.

    Use `ANEDevice.open` for hardware, `ANEDevice.simulated` for the built-in simulator, and
    `open_device` to pick by a config string.
    """

    def __init__(self, backend: Backend, fd: int, path: str, version: DrmVersion) -> None:
        self.backend = backend
        self.fd = fd
        self.path = path
        self.version = version
        self._live: dict[int, BufferObject] = {}
        self._closed = False

    @property
    def driver_name(self) -> str:
        """The DRM driver name the node reported (always ``ane``)."""
        return self.version.name

    @property
    def kernel(self) -> SimulatedKernel | None:
        """The simulated kernel behind this device, or None on hardware."""
        from .simulator import SimulatedKernel

        return self.backend if isinstance(self.backend, SimulatedKernel) else None

    @property
    def is_simulated(self) -> bool:
        """Whether this device is the simulator rather than hardware."""
        return self.kernel is not None

    @property
    def live_buffers(self) -> tuple[BufferObject, ...]:
        """BOs allocated through this device and not yet freed."""
        return tuple(self._live.values())

    @classmethod
    def open(cls, path: str | None = None, *, backend: Backend | None = None) -> ANEDevice:
        """Open ``path``, or discover the first node whose DRM driver is ``ane``.

        Raises:
            DeviceNotFoundError: No candidate is an ``ane`` node; the message lists each candidate
                with its driver name or the error it gave.
        """
        backend = OsBackend() if backend is None else backend
        candidates = [path] if path is not None else backend.nodes()
        report: list[str] = []
        for node in candidates:
            device = cls._try_node(backend, node, report)
            if device is not None:
                return device
        if not candidates:
            detail = "no device nodes under /dev/accel or /dev/dri"
        else:
            detail = "; ".join(report)
        raise DeviceNotFoundError(
            f"no ANE device found ({detail}). Is the ane driver loaded (lsmod | grep ane)? "
            "Without hardware, use the simulator (device 'sim')."
        )

    @classmethod
    def _try_node(cls, backend: Backend, node: str, report: list[str]) -> ANEDevice | None:
        try:
            fd = _retry_eintr(lambda: backend.open(node))
        except OSError as exc:
            err = exc.errno or errno.EIO
            report.append(f"{node}: {errno.errorcode.get(err, err)} on open{_hint_for(err)}")
            return None
        try:
            version = query_version(backend, fd, node)
        except AneDeviceError as exc:
            err = exc.errno or errno.EIO
            report.append(f"{node}: DRM_IOCTL_VERSION failed with {errno.errorcode.get(err, err)}")
            backend.close(fd)
            return None
        except BaseException:
            backend.close(fd)
            raise
        if version.name != ANE_DRIVER_NAME:
            report.append(f"{node}: driver '{version.name}', not '{ANE_DRIVER_NAME}'")
            backend.close(fd)
            return None
        log.debug("opened %s (driver %s %s)", node, version.name, version.date)
        return cls(backend, fd, node, version)

    @classmethod
    def simulated(
        cls,
        abi: Literal["fork", "stock"] = "fork",
        *,
        kernel: SimulatedKernel | None = None,
        output_faults: Sequence[str] = (),
    ) -> ANEDevice:
        """Open the built-in simulator; ``abi="fork"`` knows the ONNX flag, ``"stock"`` does not.

        Args:
            abi: Which kernel to emulate.
            kernel: A simulated kernel to open instead of a fresh one.
            output_faults: Faults the simulator injects into computed outputs, a testing aid
                (``bitflip``, ``zero``, ``stride``, ``swap``, ``nan``, ``scale``, ``ulp``).
        """
        from .simulator import SimulatedKernel

        if kernel is None:
            kernel = SimulatedKernel(abi=abi, output_faults=output_faults)
        return cls.open(kernel.ane_node, backend=kernel)

    def _check_open(self, call: str) -> None:
        if self._closed:
            raise AneDeviceError(errno.EBADF, call, self.path, "the device is closed")

    def allocate(self, size: int) -> BufferObject:
        """Allocate and map a BO of at least ``size`` bytes (DRM_IOCTL_ANE_BO_INIT + mmap).

        Raises:
            SubmitValidationError: ``size`` is not positive.
            AneDeviceError: The kernel refused the allocation or the mapping.
        """
        self._check_open("DRM_IOCTL_ANE_BO_INIT")
        if size <= 0:
            raise SubmitValidationError(f"buffer object size must be positive (got {size})")
        req = uapi.drm_ane_bo_init(size=size)
        _ioctl(self.backend, self.fd, uapi.DRM_IOCTL_ANE_BO_INIT, req, self.path)
        handle, rounded, offset = req.handle, req.size, req.offset
        try:
            mapping = _retry_eintr(lambda: self.backend.mmap(self.fd, rounded, offset))
        except OSError as exc:
            self._bo_free(handle)
            raise _os_error(exc, "mmap", self.path) from exc
        except BaseException:
            self._bo_free(handle)
            raise
        bo = BufferObject(self, handle, rounded, offset, mapping)
        self._live[handle] = bo
        return bo

    def _bo_free(self, handle: int) -> None:
        req = uapi.drm_ane_bo_free(handle=handle)
        try:
            _ioctl(self.backend, self.fd, uapi.DRM_IOCTL_ANE_BO_FREE, req, self.path)
        except AneDeviceError:
            # A free has no side effect to undo, and a leaked BO stays pinned in ANE address space
            # until reboot on the stock driver: one more try is cheap insurance.
            log.warning("BO_FREE of handle %d failed; retrying once", handle)
            _ioctl(self.backend, self.fd, uapi.DRM_IOCTL_ANE_BO_FREE, req, self.path)

    def _free_bo(self, bo: BufferObject) -> None:
        if self._live.get(bo.handle) is not bo:
            raise BufferObjectError(f"buffer object {bo.handle} does not belong to {self.path}")
        self._check_open("DRM_IOCTL_ANE_BO_FREE")
        self._bo_free(bo.handle)
        del self._live[bo.handle]

    def submit(
        self,
        *,
        tsk_size: int,
        td_count: int,
        td_size: int,
        handles: Mapping[int, BufferObject],
        btsp: BufferObject,
        flags: int = 0,
    ) -> Submission:
        """Run one program (DRM_IOCTL_ANE_SUBMIT); every slot not in ``handles`` is zero.

        Returns:
            The submission as the kernel left it: with the ONNX flag, the fork kernel writes the
            sizes and ``pad = 0`` back, and `resubmit` runs it again without a parse.

        Raises:
            SubmitValidationError: A field fails userspace validation; names field and value.
            AneDeviceError: The kernel failed the submit (EINVAL, ETIMEDOUT, ...).
        """
        self._check_open("DRM_IOCTL_ANE_SUBMIT")
        request = uapi.drm_ane_submit()
        submission = Submission(request, dict(handles), btsp)
        self._fill(submission, tsk_size, td_count, td_size, flags)
        self.resubmit(submission)
        return submission

    def resubmit(self, submission: Submission) -> None:
        """Run ``submission`` again, as its request now reads (checked like a new submit).

        On failure the request still holds what the kernel wrote back into it.

        Raises:
            SubmitValidationError: A field fails userspace validation.
            AneDeviceError: The kernel failed the submit.
        """
        self._check_open("DRM_IOCTL_ANE_SUBMIT")
        req = submission.request
        self._fill(submission, req.tsk_size, req.td_count, req.td_size, req.pad)
        _ioctl(self.backend, self.fd, uapi.DRM_IOCTL_ANE_SUBMIT, req, self.path)

    def _fill(
        self, submission: Submission, tsk_size: int, td_count: int, td_size: int, flags: int
    ) -> None:
        """Check every field in userspace, then write them into ``submission.request``."""
        handles, btsp = submission.handles, submission.btsp

        def bad(field: str, value: object, why: str) -> SubmitValidationError:
            return SubmitValidationError(f"submit: {field} = {value!r}: {why}")

        for slot, bo in handles.items():
            if not 0 <= slot < uapi.ANE_TILE_COUNT:
                raise bad("handles slot", slot, f"slots are 0..{uapi.ANE_TILE_COUNT - 1}")
            self._check_live(bo, f"handles[{slot}]")
        if 1 in handles:
            raise bad("handles[1]", handles[1].handle, "slot 1 must be empty (kernel derives it)")
        if 0 not in handles:
            raise bad("handles[0]", 0, "slot 0 needs the command buffer")
        self._check_live(btsp, "btsp")
        if flags & ~uapi.ANE_SUBMIT_KNOWN_FLAGS or flags < 0:
            raise bad("flags", flags, f"known flag bits are 0x{uapi.ANE_SUBMIT_KNOWN_FLAGS:x}")
        if td_size <= 0 or td_size % 4:
            raise bad("td_size", td_size, "must be a positive multiple of 4")
        if not 0 < td_count < uapi.TD_COUNT_LIMIT:
            raise bad("td_count", td_count, f"must be in 1..{uapi.TD_COUNT_LIMIT - 1}")
        cmd = handles[0]
        if not 0 < tsk_size < cmd.size:
            raise bad("tsk_size", tsk_size, f"must be positive and below slot 0's size {cmd.size}")
        if td_size > btsp.size:
            raise bad("td_size", td_size, f"larger than the bootstrap buffer ({btsp.size})")
        req = submission.request
        req.tsk_size, req.td_count, req.td_size = tsk_size, td_count, td_size
        for slot in range(uapi.ANE_TILE_COUNT):
            req.handles[slot] = handles[slot].handle if slot in handles else 0
        req.btsp_handle = btsp.handle
        req.pad = flags

    def _check_live(self, bo: BufferObject, field: str) -> None:
        if bo.closed or self._live.get(bo.handle) is not bo:
            raise SubmitValidationError(
                f"submit: {field} = {bo!r}: not a live buffer object of {self.path}"
            )

    def close(self) -> None:
        """Free every BO still alive (warning about each), then close the fd. Idempotent.

        Raises:
            AneDeviceError: A BO could not be freed; the fd is closed all the same.
        """
        if self._closed:
            return
        first_error: AneError | None = None
        alive = [repr(bo) for bo in self._live.values()]
        for bo in list(self._live.values()):
            try:
                bo.close()
            except AneError as exc:
                first_error = first_error or exc
        self._closed = True
        self._live.clear()
        self.backend.close(self.fd)
        # Warned only now that everything is released: where warnings are errors (test suites,
        # -W error), a warning raised first would leave the other BOs pinned and the fd open.
        try:
            for text in alive:
                warnings.warn(
                    f"{text} still alive when {self.path} was closed; freed it",
                    ResourceWarning,
                    stacklevel=2,
                )
        finally:
            if first_error is not None:
                raise first_error

    @property
    def closed(self) -> bool:
        """Whether the device has been closed."""
        return self._closed

    def __repr__(self) -> str:
        kind = "simulated" if self.is_simulated else "hardware"
        return f"<ANEDevice {self.path} ({kind}){' closed' if self._closed else ''}>"


SIM_SPECS = ("sim", "sim:fork", "sim:stock")
DEVICE_SPEC_HELP = '"auto", "sim", "sim:stock" or a device node path under /dev/'


def check_device_spec(spec: str) -> str:
    """Return ``spec`` when `open_device` accepts it.

    A bare ``accel0`` or a relative path would be looked up relative to the working folder, so
    only paths under ``/dev/`` are device paths.

    Raises:
        InvalidArgumentError: It is none of the accepted forms (the message lists them).
    """
    if spec == "auto" or spec in SIM_SPECS or (spec.startswith("/dev/") and len(spec) > 5):
        return spec
    raise InvalidArgumentError(f"device must be {DEVICE_SPEC_HELP} (got {spec!r})")


def open_device(spec: str = "auto", *, backend: Backend | None = None) -> ANEDevice:
    """Open a device from a config string: ``"auto"``, ``"sim"`` / ``"sim:stock"``, or a path.

    ``"auto"`` opens the first real ``ane`` node and falls back to the simulator, saying so. A
    simulator opened here injects the output faults ``ANE_BUILD_SIM_FAULTS`` names (a comma list;
    a testing aid for command-line and doit runs, never applied to hardware).

    Args:
        spec: Which device.
        backend: Open through this syscall backend instead of the OS, and for the ``sim`` specs
            instead of a fresh simulator (a `SimulatedKernel` whose faults and counters a test
            can reach); its own ABI then applies.

    Raises:
        DeviceNotFoundError: A path was given and it is not an ``ane`` node.
        InvalidArgumentError: ``spec`` is none of the accepted forms, or the environment names
            an unknown fault.
    """
    from .simulator.faults import faults_from_env

    check_device_spec(spec)
    if spec in SIM_SPECS and backend is not None:
        return ANEDevice.open(backend=backend)
    if spec in SIM_SPECS:
        abi: Literal["fork", "stock"] = "stock" if spec == "sim:stock" else "fork"
        return ANEDevice.simulated(abi, output_faults=faults_from_env())
    if spec == "auto":
        try:
            return ANEDevice.open(backend=backend)
        except DeviceNotFoundError as exc:
            log.info("no ANE hardware found, using the simulator (%s)", exc)
            return ANEDevice.simulated("fork", output_faults=faults_from_env())
    return ANEDevice.open(spec, backend=backend)
