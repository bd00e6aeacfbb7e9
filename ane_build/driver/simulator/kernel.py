"""A simulated ``ane`` kernel driver behind the `Backend` seam, errno for errno.

It takes the very ctypes structs the real driver takes and enforces its contract (DESIGN section
6): handles, 16 KiB page rounding, the ANE address-space limit, mmap bounds, every EINVAL rule of
submit for the stock and the fork ABI, the fork's in-place ONNX translation, and ETIMEDOUT where
the engine would hang. It cannot run microcode and never claims hardware results. BO memory is a
memfd per BO, so mappings share pages exactly as with the kernel.
"""

from __future__ import annotations

import binascii
import ctypes
import errno
import itertools
import json
import logging
import mmap
import os
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn, TypeVar

from ...errors import DescriptorChainError, WireFormatError
from ...formats.microcode import build_bootstrap, check_chain, walk_chain
from ...formats.protowire import (
    ENTRY_KEY,
    ENTRY_VALUE,
    MODEL_METADATA_PROPS,
    WIRE_FIXED32,
    WIRE_FIXED64,
    WIRE_LEN,
    WIRE_VARINT,
    decode_varint,
)
from .. import uapi

log = logging.getLogger(__name__)



KEY_LIMIT = 64
DECIMAL_LIMIT = 32
SIM_NODE = "/dev/accel/accel0"
_FD_BASE = 1000
_OFFSET_BASE = 1 << 32

_S = TypeVar("_S", bound=ctypes.Structure)

_OP_ALIASES = {
    "VERSION": "DRM_IOCTL_VERSION",
    "BO_INIT": "DRM_IOCTL_ANE_BO_INIT",
    "BO_FREE": "DRM_IOCTL_ANE_BO_FREE",
    "SUBMIT": "DRM_IOCTL_ANE_SUBMIT",
}
OPS = ("open", "mmap", *uapi.IOCTL_NAMES.values())


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
    mappings: list[mmap.mmap] = field(default_factory=list)


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
    """What one successful simulated submit ran."""

    tsk_size: int
    td_size: int
    td_count: int
    handles: tuple[int, ...]
    btsp_handle: int
    flags: int
    onnx_translated: bool
    outputs: tuple[str, ...] = ()
    """Output tensors computed by the reference evaluator (never by ANE microcode)."""


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
            outputs with onnx's reference evaluator and write them to the output BOs.
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
    ) -> None:
        if abi not in ("fork", "stock"):
            raise ValueError(f"abi must be 'fork' or 'stock' (got {abi!r})")
        self.abi = abi
        self.nodes_map: dict[str, str | int] = dict({SIM_NODE: "ane"} if nodes is None else nodes)
        self.address_space = address_space
        self.memory_limit = memory_limit
        self.timeout_delay = timeout_delay
        self.evaluate = evaluate
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

    # -- inspection -------------------------------------------------------------------------

    @property
    def ane_node(self) -> str:
        """The first node that reports the ``ane`` driver."""
        for path, driver in self.nodes_map.items():
            if driver == "ane":
                return path
        raise LookupError("this simulated machine has no ane node")

    @property
    def live_bos(self) -> int:
        """BOs allocated and not freed, including those leaked by closing their fd."""
        return len(self._bos)

    @property
    def open_fds(self) -> int:
        """File descriptors opened and not closed."""
        return len(self._fds)

    @property
    def address_space_used(self) -> int:
        """Bytes of ANE address space held by live BOs."""
        return sum(bo.size for bo in self._bos.values())

    def bo_bytes(self, handle: int) -> bytes:
        """A copy of a live BO's contents (for tests)."""
        bo = self._bos[handle]
        return os.pread(bo.memfd, bo.size, 0)

    # -- fault injection --------------------------------------------------------------------

    def inject_fault(self, op: str, err: int, *, nth: int = 1, count: int = 1) -> None:
        """Make the ``nth`` next call of ``op`` (and ``count - 1`` after it) fail with ``err``.

        ``op`` is ``"open"``, ``"mmap"`` or an ioctl name (``"DRM_IOCTL_ANE_SUBMIT"`` or short
        ``"SUBMIT"``). The failing call has no side effect, like an ioctl interrupted early.
        """
        op = _OP_ALIASES.get(op, op)
        if op not in OPS:
            raise ValueError(f"unknown operation {op!r}; one of {', '.join(OPS)}")
        if nth < 1 or count < 1:
            raise ValueError(f"nth and count must be >= 1 (got {nth}, {count})")
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
        """Dispatch an ioctl on the struct in place."""
        name = uapi.IOCTL_NAMES.get(request, f"0x{request:08x}")
        state = self._fds.get(fd)
        if state is None:
            raise _fail(errno.EBADF, f"ioctl on unknown fd {fd}")
        self.ioctl_log.append((state.path, name))
        self._maybe_fault(name)
        if request == uapi.DRM_IOCTL_VERSION:
            self._version(state, _expect(arg, uapi.drm_version))
            return
        if state.driver != "ane":
            # What another driver does with our numbers is undefined; the log proves it happened.
            raise _fail(errno.EINVAL, f"{name} sent to a '{state.driver}' node")
        if request == uapi.DRM_IOCTL_ANE_BO_INIT:
            self._bo_init(fd, state, _expect(arg, uapi.drm_ane_bo_init))
        elif request == uapi.DRM_IOCTL_ANE_BO_FREE:
            self._bo_free(state, _expect(arg, uapi.drm_ane_bo_free))
        elif request == uapi.DRM_IOCTL_ANE_SUBMIT:
            self._submit(state, _expect(arg, uapi.drm_ane_submit))
        else:
            raise _fail(errno.EINVAL, f"unknown ioctl {name}")

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

    # -- ioctls -----------------------------------------------------------------------------

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

    def _bo_init(self, fd: int, state: _Fd, req: uapi.drm_ane_bo_init) -> None:
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
        bo = _Bo(handle, size, _OFFSET_BASE + handle * (1 << 32), memfd, fd)
        state.bos[handle] = bo
        self._bos[handle] = bo
        req.handle, req.size, req.offset = handle, size, bo.offset

    def _bo_free(self, state: _Fd, req: uapi.drm_ane_bo_free) -> None:
        if req.pad:
            raise _fail(errno.EINVAL, "bo_free.pad must be 0")
        bo = state.bos.pop(req.handle, None)
        if bo is None:
            raise _fail(errno.EINVAL, f"bo_free of unknown handle {req.handle}")
        del self._bos[bo.handle]
        if any(not m.closed for m in bo.mappings):
            # Legal for the kernel (the mapping keeps the pages), but it breaks the free order.
            self.freed_while_mapped += 1
        os.close(bo.memfd)

    def _submit(self, state: _Fd, req: uapi.drm_ane_submit) -> None:
        flags = req.pad
        if self.abi == "stock" and flags:
            raise _fail(errno.EINVAL, f"submit.pad = 0x{flags:x}; the stock driver needs 0")
        if flags & ~uapi.ANE_SUBMIT_KNOWN_FLAGS:
            raise _fail(errno.EINVAL, f"unknown submit flags 0x{flags:x}")
        onnx = bool(flags & uapi.ANE_SUBMIT_FLAG_ONNX)
        if req.handles[0] == 0:
            raise _fail(errno.EINVAL, "handles[0] (command buffer) is 0")
        if req.handles[1] != 0:
            raise _fail(errno.EINVAL, "handles[1] must be 0")
        if req.btsp_handle == 0:
            raise _fail(errno.EINVAL, "btsp_handle is 0")
        for slot, handle in enumerate([*req.handles, req.btsp_handle]):
            if handle and handle not in state.bos:
                raise _fail(errno.EINVAL, f"slot {slot}: handle {handle} is not a live BO")
        cmd = state.bos[req.handles[0]]
        container: bytes | None = None
        entries: dict[bytes, bytes] = {}
        if onnx:
            container, entries = self._translate_onnx(cmd, req)
        if not (req.tsk_size and req.td_count and req.td_size):
            raise _fail(errno.EINVAL, "tsk_size, td_count and td_size must be non-zero")
        if req.tsk_size >= cmd.size:
            raise _fail(errno.EINVAL, f"tsk_size {req.tsk_size} >= slot 0 size {cmd.size}")
        self._run(state, req)
        outputs: tuple[str, ...] = ()
        if container is not None and b"ane.io" in entries and self.evaluate:
            outputs = _evaluate(state, req, container, entries[b"ane.io"])
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
            )
        )

    def _translate_onnx(
        self, cmd: _Bo, req: uapi.drm_ane_submit
    ) -> tuple[bytes, dict[bytes, bytes]]:
        data = os.pread(cmd.memfd, cmd.size, 0)
        entries, end = _scan_metadata(data)
        microcode = _decode_b64(entries.get(b"ane.microcode.b64"), "ane.microcode.b64")
        weights = _decode_b64(entries.get(b"ane.weights.b64", b""), "ane.weights.b64")
        td_size = _decimal(entries.get(b"ane.td_size"), "ane.td_size")
        td_count = _decimal(entries.get(b"ane.td_count"), "ane.td_count")
        if not microcode:
            raise _fail(errno.EINVAL, "ane.microcode.b64 missing or empty")
        weights_at = uapi.round_up(len(microcode), uapi.ANE_CMD_GRAN)
        if weights_at + len(weights) > cmd.size:
            raise _fail(
                errno.EINVAL,
                f"microcode+weights ({weights_at + len(weights)}) exceed the BO ({cmd.size})",
            )
        image = microcode + bytes(weights_at - len(microcode)) + weights
        os.pwrite(cmd.memfd, image, 0)
        req.tsk_size, req.td_size, req.td_count = len(microcode), td_size, td_count
        return data[:end], entries

    def _run(self, state: _Fd, req: uapi.drm_ane_submit) -> None:
        cmd = state.bos[req.handles[0]]
        btsp = state.bos[req.btsp_handle]
        microcode = os.pread(cmd.memfd, req.tsk_size, 0)
        try:
            chain = walk_chain(microcode, req.td_size)
            check_chain(chain, td_count=req.td_count)
            expected = build_bootstrap(microcode, req.td_size)
        except DescriptorChainError as exc:
            self._timeout(f"descriptor chain would hang the engine: {exc}")
        # The engine stops at the end-of-network flag, so zero padding up to tsk_size is never
        # fetched; anything else there means td_size cut the first descriptor short.
        if any(microcode[chain.tsk_size :]):
            self._timeout(
                f"non-zero bytes after the chain's end at 0x{chain.tsk_size:x} (tsk_size "
                f"0x{req.tsk_size:x}): td_size {req.td_size} is not the first descriptor's size"
            )
        # The hardware cannot tell us the first descriptor's true size; model anecc's uniform
        # chains, where every descriptor has the size the first one declares for its successor.
        sizes = {d.size for d in chain.descriptors}
        if len(sizes) > 1:
            self._timeout(f"td_size {req.td_size} differs from the chain's descriptor size")
        if btsp.size < req.td_size or os.pread(btsp.memfd, req.td_size, 0) != expected:
            self._timeout("bootstrap buffer does not hold the first descriptor with the FIFO id")

    def _timeout(self, why: str) -> NoReturn:
        if self.timeout_delay:
            time.sleep(self.timeout_delay)
        raise _fail(errno.ETIMEDOUT, why)


def _expect(arg: ctypes.Structure, kind: type[_S]) -> _S:
    if not isinstance(arg, kind):
        raise _fail(errno.EFAULT, f"expected struct {kind.__name__}, got {type(arg).__name__}")
    return arg


def _scan_metadata(data: bytes) -> tuple[dict[bytes, bytes], int]:
    """Collect metadata_props entries the way the fork kernel does; EINVAL on malformed input.

    The container is followed by zero padding up to the BO size; a zero tag byte ends it.
    Returns the entries and where the container ends.
    """
    entries: dict[bytes, bytes] = {}
    end = len(data)
    pos = 0
    try:
        while pos < end and data[pos] != 0:
            tag, pos = decode_varint(data, pos, end)
            number, wire = tag >> 3, tag & 7
            if wire == WIRE_VARINT:
                _, pos = decode_varint(data, pos, end)
                continue
            if wire in (WIRE_FIXED64, WIRE_FIXED32):
                pos += 8 if wire == WIRE_FIXED64 else 4
                continue
            if wire != WIRE_LEN:
                raise _fail(errno.EINVAL, f"wire type {wire} at byte {pos}")
            length, pos = decode_varint(data, pos, end)
            if pos + length > end:
                raise _fail(errno.EINVAL, f"field {number} runs past the BO")
            if number == MODEL_METADATA_PROPS:
                key, value = _scan_entry(data, pos, pos + length)
                if len(key) >= KEY_LIMIT:
                    raise _fail(errno.EINVAL, f"metadata key of {len(key)} bytes (limit 63)")
                entries[key] = value
            pos += length
    except WireFormatError as exc:
        raise _fail(errno.EINVAL, f"malformed container: {exc}") from exc
    return entries, pos


def _evaluate(
    state: _Fd, req: uapi.drm_ane_submit, container: bytes, io_json: bytes
) -> tuple[str, ...]:
    """Compute the graph's outputs with onnx's reference evaluator, in the ANE tensor layout.

    The simulator cannot run microcode; this stands in for it so the data path (tile, upload,
    submit, read back, untile) is exercised end to end. Graphs it cannot evaluate leave the
    output buffers untouched: that is a limit of the simulator, never a kernel error.
    """
    try:
        slots = {int(k): v for k, v in json.loads(io_json).items()}
        if not any(v["role"] == "output" for v in slots.values()):
            return ()
        import numpy as np
        import onnx
        from onnx.reference import ReferenceEvaluator

        from ...formats.tiling import tile, untile

        model = onnx.load_from_string(container)
        graph_inputs = [i.name for i in model.graph.input]
        graph_outputs = [o.name for o in model.graph.output]
        feeds: dict[str, Any] = {}
        dtypes = {
            i.name: onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type)
            for i in model.graph.input
        }
        ins = sorted((s, v) for s, v in slots.items() if v["role"] == "input")
        outs = sorted((s, v) for s, v in slots.items() if v["role"] == "output")
        for index, (slot, spec) in enumerate(ins):
            name = spec.get("name") if spec.get("name") in graph_inputs else graph_inputs[index]
            bo = state.bos[req.handles[slot]]
            raw = os.pread(bo.memfd, bo.size, 0)
            dims = (spec["n"], spec["c"], spec["h"], spec["w"])
            array = untile(raw, *dims, spec["row_stride"], spec["plane_stride"])
            shape = [d.dim_value for d in _input(model, name).type.tensor_type.shape.dim]
            feeds[name] = array.reshape(shape).astype(dtypes[name])
        results = dict(zip(graph_outputs, ReferenceEvaluator(model).run(None, feeds), strict=True))
        written = []
        for index, (slot, spec) in enumerate(outs):
            name = spec.get("name") if spec.get("name") in results else graph_outputs[index]
            value = np.asarray(results[name], dtype=np.float16)
            dims = (spec["n"], spec["c"], spec["h"], spec["w"])
            out = bytearray(state.bos[req.handles[slot]].size)
            tile(
                value.reshape(dims),
                row_stride=spec["row_stride"],
                plane_stride=spec["plane_stride"],
                out=memoryview(out),
            )
            os.pwrite(state.bos[req.handles[slot]].memfd, out, 0)
            written.append(name)
        return tuple(written)
    # The evaluator raises whatever onnx or numpy raise; none of it is a kernel error.
    except Exception as exc:
        log.info("simulator: outputs not computed (%s: %s)", type(exc).__name__, exc)
        return ()


def _input(model: Any, name: str) -> Any:
    return next(i for i in model.graph.input if i.name == name)


def _scan_entry(data: bytes, pos: int, end: int) -> tuple[bytes, bytes]:
    key = value = b""
    while pos < end:
        tag, pos = decode_varint(data, pos, end)
        if tag & 7 != WIRE_LEN:
            raise _fail(errno.EINVAL, "metadata entry field is not length-delimited")
        length, pos = decode_varint(data, pos, end)
        if pos + length > end:
            raise _fail(errno.EINVAL, "metadata entry runs past its end")
        if tag >> 3 == ENTRY_KEY:
            key = data[pos : pos + length]
        elif tag >> 3 == ENTRY_VALUE:
            value = data[pos : pos + length]
        pos += length
    return key, value


_URLSAFE_TO_STD = bytes.maketrans(b"-_", b"+/")


def _decode_b64(value: bytes | None, key: str) -> bytes:
    if value is None:
        return b""
    text = b"".join(value.split()).translate(_URLSAFE_TO_STD)
    if len(text) % 4:
        text += b"=" * (-len(text) % 4)
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except binascii.Error as exc:
        raise _fail(errno.EINVAL, f"{key}: invalid base64 ({exc})") from exc


def _decimal(value: bytes | None, key: str) -> int:
    if not value or len(value) >= DECIMAL_LIMIT or not value.isdigit():
        raise _fail(errno.EINVAL, f"{key}: missing or not a decimal string below 32 chars")
    number = int(value)
    if not 0 < number < 1 << 32:
        raise _fail(errno.EINVAL, f"{key}: {number} out of range")
    return number
