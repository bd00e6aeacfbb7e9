"""A simulated ``ane`` kernel driver behind the `Backend` seam, errno for errno.

It takes the very ctypes structs the real driver takes and enforces its contract (DESIGN section
6): handles, page rounding, the ANE address-space limit, mmap bounds, every EINVAL rule of submit
for the stock and the fork ABI, the fork's in-place ONNX translation, and ETIMEDOUT where the
engine would hang. ioctls are dispatched through handlers registered by their computed number
(the m1n1 proxy shim's way). BO memory is a memfd per BO, so mappings share pages exactly as with
the kernel. It cannot run microcode and never claims hardware results.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import itertools
import logging
import mmap
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, NoReturn, TypeVar

from ...errors import DeviceNotFoundError, InvalidArgumentError
from .. import uapi
from ..kernel_onnx import prepare_submit
from .engine import EngineHangError, run_chain
from .evaluate import EvaluationError, Graph, evaluate, graph_and_io
from .faults import check_faults

log = logging.getLogger(__name__)

SIM_NODE = "/dev/accel/accel0"
_FD_BASE = 1000
_OFFSET_BASE = 1 << 32

_S = TypeVar("_S", bound=ctypes.Structure)
_Handler = Callable[["SimulatedKernel", "_Fd", ctypes.Structure], None]

# ioctl number -> (struct type, handler); filled by `_ioctl` below, read by `SimulatedKernel.ioctl`.
HANDLERS: dict[int, tuple[type[ctypes.Structure], _Handler]] = {}

_OP_ALIASES = {
    "VERSION": "DRM_IOCTL_VERSION",
    "BO_INIT": "DRM_IOCTL_ANE_BO_INIT",
    "BO_FREE": "DRM_IOCTL_ANE_BO_FREE",
    "SUBMIT": "DRM_IOCTL_ANE_SUBMIT",
}
OPS = ("open", "mmap", *uapi.IOCTL_NAMES.values())


def _ioctl(number: int, struct: type[_S]) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register the decorated method as the handler of ioctl ``number`` taking ``struct``."""

    def register(handler: Callable[..., None]) -> Callable[..., None]:
        HANDLERS[number] = (struct, handler)
        return handler

    return register


def _sha256(data: memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def _fail(err: int, why: str) -> OSError:
    log.debug("simulated kernel: %s: %s", errno.errorcode.get(err, err), why)
    return OSError(err, f"{os.strerror(err)} (simulator: {why})")


@dataclass
class _Bo:
    handle: int
    size: int
    offset: int
    memfd: int
    owner: int
    kmap: mmap.mmap | None = None
    mappings: list[mmap.mmap] = field(default_factory=list)

    @property
    def view(self) -> memoryview:
        """The kernel's view of the BO's pages.

        The real kernel's own mapping of a BO is not charged to the process; a second mapping
        here would be, doubling the resident size of every page both sides touch (a 1.4 GB
        container would count 2.8 GB). So the kernel borrows a live user mapping of the whole
        BO, and maps the memfd itself only when there is none. Same pages either way.
        """
        for mapping in self.mappings:
            if not mapping.closed and len(mapping) == self.size:
                return memoryview(mapping)
        if self.kmap is None:
            self.kmap = mmap.mmap(self.memfd, self.size, flags=mmap.MAP_SHARED)
        return memoryview(self.kmap)


@dataclass(frozen=True)
class _Program:
    """What the CPU stand-in runs for a command buffer the kernel translated from a container.

    The real engine runs the microcode in the BO; the stand-in keys the graph it learnt at
    translation on the microcode bytes, so resubmitting the translated image computes outputs
    again, and a BO that now holds other microcode does not.
    """

    microcode_sha256: str
    graph: Graph


@dataclass
class _Fd:
    path: str
    driver: str
    bos: dict[int, _Bo] = field(default_factory=dict)


@dataclass
class _Fault:
    op: str
    err: int
    skip: int
    count: int


@dataclass(frozen=True)
class SubmitRecord:
    """What one successful simulated submit ran.

    Attributes:
        outputs: Output tensors computed by the CPU stand-in (never by ANE microcode).
        evaluation_error: Why no outputs were computed for an ONNX-mode submit with ``ane.io``.
    """

    tsk_size: int
    td_size: int
    td_count: int
    handles: tuple[int, ...]
    btsp_handle: int
    flags: int
    onnx_translated: bool
    outputs: tuple[str, ...] = ()
    evaluation_error: str | None = None


class SimulatedKernel:
    """The ``ane`` driver's contract in Python; also a `Backend` for `ANEDevice`.

    Args:
        abi: ``"fork"`` accepts ``ANE_SUBMIT_FLAG_ONNX``; ``"stock"`` rejects any non-zero pad.
        nodes: Device nodes this fake machine has, mapped to the DRM driver name each reports,
            or to an errno that opening it fails with. Defaults to one ``ane`` accel node.
        address_space: Bytes of ANE address space shared by all BOs.
        memory_limit: Largest single pinning the host allows before ENOMEM.
        timeout_delay: Seconds to sleep before returning ETIMEDOUT (the real driver waits ~1 s).
        evaluate: After a successful ONNX-flag submit whose container has ``ane.io``, compute the
            outputs on the CPU and write them to the output BOs.
        output_faults: Faults to inject into those outputs (see `faults.FAULTS`), to show that
            checks catch them.

    Raises:
        InvalidArgumentError: An unknown ABI or fault name.
    """

    def __init__(
        self,
        abi: Literal["fork", "stock"] = "fork",
        *,
        nodes: Mapping[str, str | int] | None = None,
        address_space: int = uapi.ANE_ADDRESS_SPACE,
        memory_limit: int = 1 << 40,
        timeout_delay: float = 0.0,
        evaluate: bool = True,
        output_faults: Sequence[str] = (),
    ) -> None:
        if abi not in ("fork", "stock"):
            raise InvalidArgumentError(f"abi must be 'fork' or 'stock' (got {abi!r})")
        self.abi = abi
        self.nodes_map: dict[str, str | int] = dict({SIM_NODE: "ane"} if nodes is None else nodes)
        self.address_space = address_space
        self.memory_limit = memory_limit
        self.timeout_delay = timeout_delay
        self.evaluate = evaluate
        self.output_faults = check_faults(output_faults)
        self.counters: Counter[str] = Counter()
        self.ioctl_log: list[tuple[str, str]] = []
        self.submits: list[SubmitRecord] = []
        self.bytes_mapped = 0
        self.freed_while_mapped = 0
        self._fds: dict[int, _Fd] = {}
        self._bos: dict[int, _Bo] = {}
        self._leaked: list[_Bo] = []
        self._next_fd = itertools.count(_FD_BASE)
        self._next_handle = itertools.count(1)
        self._faults: list[_Fault] = []
        self._programs: dict[int, _Program] = {}

    # -- inspection -------------------------------------------------------------------------

    @property
    def ane_node(self) -> str:
        """The first node that reports the ``ane`` driver."""
        for path, driver in self.nodes_map.items():
            if driver == "ane":
                return path
        raise DeviceNotFoundError("this simulated machine has no ane node")

    @property
    def live_bos(self) -> int:
        """BOs allocated and not freed, including those leaked by closing their fd."""
        return len(self._bos)

    @property
    def open_fds(self) -> int:
        """File descriptors opened and not closed."""
        return len(self._fds)

    @property
    def own_mappings(self) -> int:
        """Live BOs the kernel had to map itself (no user mapping of the whole BO to borrow)."""
        return sum(bo.kmap is not None for bo in self._bos.values())

    @property
    def address_space_used(self) -> int:
        """Bytes of ANE address space held by live BOs."""
        return sum(bo.size for bo in self._bos.values())

    def bo_bytes(self, handle: int) -> bytes:
        """A copy of a live BO's contents (for tests)."""
        with self._bos[handle].view as view:
            return bytes(view)

    # -- fault injection --------------------------------------------------------------------

    def inject_fault(self, op: str, err: int, *, nth: int = 1, count: int = 1) -> None:
        """Make the ``nth`` next call of ``op`` (and ``count - 1`` after it) fail with ``err``.

        ``op`` is ``"open"``, ``"mmap"`` or an ioctl name (``"DRM_IOCTL_ANE_SUBMIT"`` or short
        ``"SUBMIT"``). The failing call has no side effect, like an ioctl interrupted early.
        """
        op = _OP_ALIASES.get(op, op)
        if op not in OPS:
            raise InvalidArgumentError(f"unknown operation {op!r}; one of {', '.join(OPS)}")
        if nth < 1 or count < 1:
            raise InvalidArgumentError(f"nth and count must be >= 1 (got {nth}, {count})")
        self._faults.append(_Fault(op, err, nth - 1, count))

    def clear_faults(self) -> None:
        """Drop every pending injected fault."""
        self._faults.clear()

    def _maybe_fault(self, op: str) -> None:
        self.counters[op] += 1
        for fault in self._faults:
            if fault.op != op:
                continue
            if fault.skip:
                fault.skip -= 1
                continue
            fault.count -= 1
            if fault.count == 0:
                self._faults.remove(fault)
            self.counters["faults"] += 1
            raise _fail(fault.err, f"injected fault on {op}")

    # -- Backend ----------------------------------------------------------------------------

    def nodes(self) -> list[str]:
        """The fake machine's device nodes, accel nodes first."""
        return sorted(self.nodes_map, key=lambda p: (not p.startswith("/dev/accel"), p))

    def open(self, path: str) -> int:
        """Open a fake node; unknown paths fail with ENOENT."""
        self._maybe_fault("open")
        driver = self.nodes_map.get(path)
        if driver is None:
            raise _fail(errno.ENOENT, f"no such node {path}")
        if isinstance(driver, int):
            raise _fail(driver, f"opening {path}")
        fd = next(self._next_fd)
        self._fds[fd] = _Fd(path, driver)
        return fd

    def close(self, fd: int) -> None:
        """Close an fd. Like the stock driver, BOs still alive are leaked, not freed."""
        state = self._fds.pop(fd, None)
        if state is None:
            raise _fail(errno.EBADF, f"close of unknown fd {fd}")
        if state.bos:
            log.warning("simulated kernel: fd closed with %d BOs alive; leaked", len(state.bos))
            self._leaked.extend(state.bos.values())

    def ioctl(self, fd: int, request: int, arg: ctypes.Structure) -> None:
        """Dispatch an ioctl to its registered handler, on the struct in place."""
        name = uapi.IOCTL_NAMES.get(request, f"0x{request:08x}")
        state = self._fds.get(fd)
        if state is None:
            raise _fail(errno.EBADF, f"ioctl on unknown fd {fd}")
        self.ioctl_log.append((state.path, name))
        self._maybe_fault(name)
        entry = HANDLERS.get(request)
        if entry is None:
            raise _fail(errno.EINVAL, f"unknown ioctl {name}")
        struct, handler = entry
        if request != uapi.DRM_IOCTL_VERSION and state.driver != "ane":
            # What another driver does with our numbers is undefined; the log proves it happened.
            raise _fail(errno.EINVAL, f"{name} sent to a '{state.driver}' node")
        if not isinstance(arg, struct):
            raise _fail(
                errno.EFAULT, f"expected struct {struct.__name__}, got {type(arg).__name__}"
            )
        handler(self, state, arg)

    def mmap(self, fd: int, size: int, offset: int) -> mmap.mmap:
        """Map a BO by its fake offset; the range must lie within the BO."""
        state = self._fds.get(fd)
        if state is None:
            raise _fail(errno.EBADF, f"mmap on unknown fd {fd}")
        self._maybe_fault("mmap")
        bo = next((b for b in state.bos.values() if b.offset == offset), None)
        if bo is None:
            raise _fail(errno.EINVAL, f"no BO at mmap offset 0x{offset:x}")
        if size <= 0 or size > bo.size:
            raise _fail(errno.EINVAL, f"mmap of {size} bytes exceeds BO {bo.handle} ({bo.size})")
        mapping = mmap.mmap(bo.memfd, size, flags=mmap.MAP_SHARED)
        bo.mappings.append(mapping)
        self.bytes_mapped += size
        return mapping

    # -- ioctl handlers ---------------------------------------------------------------------

    @_ioctl(uapi.DRM_IOCTL_VERSION, uapi.drm_version)
    def _version(self, state: _Fd, ver: uapi.drm_version) -> None:
        strings = (
            ("name", state.driver.encode()),
            ("date", b"20260101"),
            ("desc", f"simulated {state.driver} ({self.abi} ABI)".encode()),
        )
        for fieldname, text in strings:
            want = getattr(ver, f"{fieldname}_len")
            ptr = getattr(ver, fieldname)
            if want and not ptr:
                raise _fail(errno.EFAULT, f"drm_version.{fieldname} is NULL")
            if want:
                ctypes.memmove(ptr, text, min(want, len(text)))
            setattr(ver, f"{fieldname}_len", len(text))
        ver.version_major, ver.version_minor, ver.version_patchlevel = 1, 0, 0

    @_ioctl(uapi.DRM_IOCTL_ANE_BO_INIT, uapi.drm_ane_bo_init)
    def _bo_init(self, state: _Fd, req: uapi.drm_ane_bo_init) -> None:
        if req.pad:
            raise _fail(errno.EINVAL, "bo_init.pad must be 0")
        if req.size == 0:
            raise _fail(errno.EINVAL, "bo_init.size is 0")
        size = uapi.round_up(req.size, uapi.PAGE_SIZE)
        if size > self.memory_limit:
            raise _fail(errno.ENOMEM, f"cannot pin {size} bytes")
        if self.address_space_used + size > self.address_space:
            raise _fail(
                errno.ENOSPC,
                f"ANE address space exhausted ({self.address_space_used} of "
                f"{self.address_space} bytes in use, {size} more asked)",
            )
        handle = next(self._next_handle)
        memfd = os.memfd_create(f"ane-bo-{handle}", os.MFD_CLOEXEC)
        try:
            os.ftruncate(memfd, size)
        except OSError:
            os.close(memfd)
            raise
        owner = next(fd for fd, fd_state in self._fds.items() if fd_state is state)
        bo = _Bo(handle, size, _OFFSET_BASE + handle * (1 << 32), memfd, owner)
        state.bos[handle] = bo
        self._bos[handle] = bo
        req.handle, req.size, req.offset = handle, size, bo.offset

    @_ioctl(uapi.DRM_IOCTL_ANE_BO_FREE, uapi.drm_ane_bo_free)
    def _bo_free(self, state: _Fd, req: uapi.drm_ane_bo_free) -> None:
        if req.pad:
            raise _fail(errno.EINVAL, "bo_free.pad must be 0")
        bo = state.bos.pop(req.handle, None)
        if bo is None:
            raise _fail(errno.EINVAL, f"bo_free of unknown handle {req.handle}")
        del self._bos[bo.handle]
        self._programs.pop(bo.handle, None)
        if any(not m.closed for m in bo.mappings):
            # Legal for the kernel (the mapping keeps the pages), but it breaks the free order.
            self.freed_while_mapped += 1
        try:
            if bo.kmap is not None:
                bo.kmap.close()
        except BufferError:
            # A view is still held (say, by a traceback); the mapping goes with the last one.
            log.debug("simulated kernel: BO %d mapping still referenced; unmapped later", bo.handle)
        os.close(bo.memfd)

    @_ioctl(uapi.DRM_IOCTL_ANE_SUBMIT, uapi.drm_ane_submit)
    def _submit(self, state: _Fd, req: uapi.drm_ane_submit) -> None:
        flags = req.pad
        if self.abi == "stock" and flags:
            raise _fail(errno.EINVAL, f"submit.pad = 0x{flags:x}; the stock driver needs 0")
        if flags & ~uapi.ANE_SUBMIT_KNOWN_FLAGS:
            raise _fail(errno.EINVAL, f"unknown submit flags 0x{flags:x}")
        onnx = bool(flags & uapi.ANE_SUBMIT_FLAG_ONNX)
        if req.handles[0] == 0:
            raise _fail(errno.EINVAL, "handles[0] (command buffer) is 0")
        cmd = state.bos.get(req.handles[0])
        if onnx:
            if cmd is None:
                raise _fail(errno.EINVAL, f"slot 0: handle {req.handles[0]} is not a live BO")
            self._translate_onnx(cmd, req)
        self._check_handles(state, req)
        if not (req.tsk_size and req.td_count and req.td_size):
            raise _fail(errno.EINVAL, "tsk_size, td_count and td_size must be non-zero")
        cmd = state.bos[req.handles[0]]
        if req.tsk_size >= cmd.size:
            raise _fail(errno.EINVAL, f"tsk_size {req.tsk_size} >= slot 0 size {cmd.size}")
        self._run(state, req)
        outputs, error = self._outputs(state, req, self._program_of(cmd, req))
        self.submits.append(
            SubmitRecord(
                req.tsk_size,
                req.td_size,
                req.td_count,
                tuple(req.handles),
                req.btsp_handle,
                flags,
                onnx,
                outputs,
                error,
            )
        )

    # -- submit steps -----------------------------------------------------------------------

    @staticmethod
    def _check_handles(state: _Fd, req: uapi.drm_ane_submit) -> None:
        if req.handles[1] != 0:
            raise _fail(errno.EINVAL, "handles[1] must be 0")
        if req.btsp_handle == 0:
            raise _fail(errno.EINVAL, "btsp_handle is 0")
        for slot, handle in enumerate([*req.handles, req.btsp_handle]):
            if handle and handle not in state.bos:
                raise _fail(errno.EINVAL, f"slot {slot}: handle {handle} is not a live BO")

    def _translate_onnx(self, cmd: _Bo, req: uapi.drm_ane_submit) -> None:
        self.counters["onnx translations"] += 1
        # The evaluator needs the graph and ane.io, which the kernel's rewrite overwrites.
        evaluation = graph_and_io(cmd.view) if self.evaluate else None
        verdict = prepare_submit(cmd.view)
        if not verdict.ok:
            raise _fail(verdict.errno, f"{verdict.rule}: {verdict.detail}")
        # Written back before the other handles are checked, as the fork kernel does.
        req.tsk_size, req.td_size = verdict.tsk_size, verdict.td_size
        req.td_count, req.pad = verdict.td_count, 0
        self._programs.pop(cmd.handle, None)
        if evaluation is not None:
            code = cmd.view[: verdict.tsk_size]
            self._programs[cmd.handle] = _Program(_sha256(code), Graph(*evaluation))

    def _program_of(self, cmd: _Bo | None, req: uapi.drm_ane_submit) -> _Program | None:
        if cmd is None:
            return None
        program = self._programs.get(cmd.handle)
        if program is None or req.tsk_size > cmd.size:
            return None
        same = _sha256(cmd.view[: req.tsk_size]) == program.microcode_sha256
        return program if same else None

    def _run(self, state: _Fd, req: uapi.drm_ane_submit) -> None:
        cmd = state.bos[req.handles[0]]
        btsp = state.bos[req.btsp_handle]
        try:
            run_chain(cmd.view[: req.tsk_size], req.td_size, req.td_count, btsp.view)
        except EngineHangError as exc:
            self._timeout(str(exc))

    def _outputs(
        self, state: _Fd, req: uapi.drm_ane_submit, program: _Program | None
    ) -> tuple[tuple[str, ...], str | None]:
        if program is None:
            return (), None
        try:
            slots = program.graph.slots
            if not any(slot.role == "output" for slot in slots.values()):
                return (), None
            views = {
                s: state.bos[req.handles[s]].view
                for s in slots
                if 0 <= s < uapi.ANE_TILE_COUNT and req.handles[s]
            }
            return evaluate(program.graph, views, self.output_faults), None
        except (EvaluationError, KeyError) as exc:
            # The kernel accepted the submit; only the CPU stand-in for the engine failed.
            log.warning("simulator: outputs not computed: %s", exc)
            return (), str(exc)

    def _timeout(self, why: str) -> NoReturn:
        if self.timeout_delay:
            time.sleep(self.timeout_delay)
        raise _fail(errno.ETIMEDOUT, why)
