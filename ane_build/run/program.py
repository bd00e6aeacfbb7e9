"""`AneProgram`: a program's buffer objects, allocated once and submitted many times.

Slot 0 holds the command buffer: microcode, zeros to 16 bytes, weights (direct mode), or the
whole ONNX container for the fork kernel to translate (ONNX mode, once: the kernel writes the
sizes back, and later runs resubmit that struct over the translated image without a parse).
Slot 1 stays empty, tensor slots get their own BOs, and the bootstrap BO holds the first
descriptor with the FIFO network id. Every BO is freed on every path. This module must not parse
ONNX graphs and must not decide which device to use.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from io import BufferedReader
from pathlib import Path
from types import MappingProxyType
from typing import Literal, cast

import numpy as np

from .._fs import open_regular
from .._resource import Closing
from ..driver import uapi
from ..driver.device import ANEDevice, BufferObject, Submission
from ..errors import (
    AneDeviceError,
    AneFormatError,
    InputError,
    ModelFileError,
    SubmitValidationError,
)
from ..formats.microcode import build_bootstrap, check_chain, walk_chain
from ..formats.payload import IoSlot
from ..formats.tiling import tensor_extent, tensor_view, to_fp16

SubmitMode = Literal["onnx", "direct"]
_COPY_CHUNK = 8 << 20
# After an odd-length container the zeros up to the BO's end are odd in number, and the fork
# kernel reads the last one as a field tag with no value (EINVAL). These three bytes are a
# field-0 varint tag and the two-byte varint 0: written right after the container, they leave an
# even run of zeros behind them, whatever the BO's size.
ODD_TAIL_FILL = b"\x00\x80\x00"


@dataclass(frozen=True)
class StreamedPayload:
    """A payload too large to hold twice: its length, and its bytes in chunks on demand."""

    length: int
    chunks: Callable[[], Iterable[bytes]]


Payload = bytes | StreamedPayload


@dataclass(frozen=True)
class SubmitResult:
    """What one run of a program did.

    Attributes:
        mode: ``"onnx"`` (the kernel translated a container) or ``"direct"``.
        device: The device node path.
        simulated: True when the device is the simulator: outputs are not hardware results.
        tsk_size: The microcode size submitted.
        td_size: First descriptor size.
        td_count: Descriptor count.
        slots: BO size per slot used (slot -> bytes), the bootstrap under key ``"btsp"``.
        elapsed: Seconds in the submit ioctl (on an ONNX-mode first run, the kernel's
            translation of the container is part of it).
        total: Seconds for the whole run: uploads, inputs, the submit and reading outputs.
        translated: This run handed the kernel a container to parse (the first ONNX run).
        outputs: Output tensors read back from their BOs (fp16 NCHW), by name.
        load: Seconds spent loading the program for this run (metadata, microcode, buffer
            allocation); 0.0 when it was loaded beforehand and reused.
    """

    mode: SubmitMode
    device: str
    simulated: bool
    tsk_size: int
    td_size: int
    td_count: int
    slots: Mapping[int | str, int]
    elapsed: float
    total: float = 0.0
    translated: bool = False
    outputs: Mapping[str, np.ndarray] = field(default_factory=dict)
    load: float = 0.0

    def describe(self) -> str:
        """One human line: what ran where, and how long it took."""
        where = "the simulator (not a hardware result)" if self.simulated else self.device
        slots = ", ".join(f"{k}:{v}" for k, v in self.slots.items())
        how = "translated by the kernel" if self.translated else "resubmitted"
        mode = f"{self.mode} mode ({how})" if self.mode == "onnx" else "direct mode"
        return (
            f"submitted in {mode} to {where}: tsk_size=0x{self.tsk_size:x} "
            f"td_size=0x{self.td_size:x} td_count={self.td_count}, BOs [{slots}]; "
            f"{_timings(self)}"
        )


def _timings(result: SubmitResult) -> str:
    """Where the time went: the whole, then loading, the run and the ioctl within it."""
    parts = [f"load {result.load * 1e3:.2f} ms"] if result.load else []
    parts.append(f"run {result.total * 1e3:.2f} ms")
    parts.append(f"of which the submit ioctl {result.elapsed * 1e3:.2f} ms")
    return f"took {(result.load + result.total) * 1e3:.2f} ms ({', '.join(parts)})"


def _payload_length(payload: Payload) -> int:
    return len(payload) if isinstance(payload, bytes) else payload.length


def container_length(container: Path | bytes | None) -> int:
    """Bytes of a container given as a path or its bytes (0 for none)."""
    if container is None:
        return 0
    if isinstance(container, bytes):
        return len(container)
    return os.stat(container).st_size


class AneProgram(Closing):
    """A program's buffer objects, allocated once and submitted many times.

    Args:
        device: Where to allocate.
        microcode: The descriptor chain.
        td_size: First descriptor size.
        td_count: Descriptor count.
        weights: Kernel weights placed after the microcode (bytes, or streamed in chunks).
        tiles: BO size in bytes per slot (slots 0 and 1 are ignored here).
        io: Tensors per slot, for `run` inputs and outputs.
        container: The ONNX container (a path or bytes) for ONNX-mode runs.
        label: Name used in messages.

    Raises:
        DescriptorChainError: The chain disagrees with ``td_size``/``td_count``.
        SubmitValidationError: ``tiles`` or ``io`` name slots that cannot be used, or a slot's
            buffer is too small for the tensor ``io`` says it holds.
        AneDeviceError: Allocation failed (nothing stays allocated).
    """

    def __init__(
        self,
        device: ANEDevice,
        *,
        microcode: bytes,
        td_size: int,
        td_count: int,
        weights: Payload = b"",
        tiles: Mapping[int, int] | None = None,
        io: Mapping[int, IoSlot] | None = None,
        container: Path | bytes | None = None,
        label: str = "program",
    ) -> None:
        chain = walk_chain(microcode, td_size, source=label)
        check_chain(chain, td_size=td_size, td_count=td_count, source=label)
        self.device = device
        self.label = label
        self.td_size, self.td_count = td_size, td_count
        self.microcode = bytes(microcode)
        self.weights = weights
        self.io = dict(io or {})
        self.uploads = 0
        self._container = container
        self._holds: Literal["image", "container"] | None = None
        self._submission: Submission | None = None
        self._stack = ExitStack()
        self._inputs: dict[str, tuple[IoSlot, np.ndarray]] = {}
        self._cleared: list[np.ndarray] = []
        self._outputs: list[tuple[str, np.ndarray]] = []
        try:
            self._allocate(tiles or {})
        except BaseException:
            self.close()
            raise

    @property
    def tsk_size(self) -> int:
        """The microcode's size."""
        return len(self.microcode)

    def _image_length(self) -> int:
        return uapi.round_up(self.tsk_size, uapi.ANE_CMD_GRAN) + _payload_length(self.weights)

    def _allocate(self, tiles: Mapping[int, int]) -> None:
        onnx_room = container_length(self._container) + len(ODD_TAIL_FILL)
        size = max(self._image_length(), onnx_room if self._container else 0, self.tsk_size + 1)
        self.cmd = self._stack.enter_context(self.device.allocate(size))
        self.btsp = self._stack.enter_context(self.device.allocate(self.td_size))
        self.btsp.write(build_bootstrap(self.microcode, self.td_size, source=self.label))
        self.buffers: dict[int, BufferObject] = {0: self.cmd}
        for slot, bytes_ in sorted(tiles.items()):
            if slot in (0, 1):
                continue
            if not 0 <= slot < uapi.ANE_TILE_COUNT or bytes_ <= 0:
                raise SubmitValidationError(f"{self.label}: tiles[{slot}] = {bytes_}: invalid slot")
            self.buffers[slot] = self._stack.enter_context(self.device.allocate(bytes_))
        for slot in self.io:
            if slot not in self.buffers:
                raise SubmitValidationError(
                    f"{self.label}: ane.io names slot {slot} but ane.tiles gives it no buffer"
                )
        self._plan_runs()

    def _plan_runs(self) -> None:
        """Settle once what every run does with each slot, so a run only moves data.

        Every tensor gets a strided view of its BO, checked here once: runs write inputs and
        read outputs through them. An input BO is zeroed here and only its tensor is written
        after, so its padding stays zero.
        """
        named = [(io.name or f"slot{slot}", slot, io) for slot, io in self.io.items()]
        for name, slot, io in named:
            # Checked before any view exists: a failure must leave nothing holding the mappings.
            try:
                needed = tensor_extent(io.n, io.c, io.h, io.w, io.row_stride, io.plane_stride)
            except AneFormatError as exc:
                raise SubmitValidationError(f"{self.label}: slot {slot} ({name!r}): {exc}") from exc
            if needed > self.buffers[slot].size:
                raise SubmitValidationError(
                    f"{self.label}: slot {slot} ({self.buffers[slot].size} bytes) is too small "
                    f"for {name!r} ({io.n}x{io.c}x{io.h}x{io.w}, {needed} bytes)"
                )
        raw = {slot: np.frombuffer(self.buffers[slot].view, np.uint8) for _, slot, _ in named}
        views = {
            slot: tensor_view(raw[slot], io.n, io.c, io.h, io.w, io.row_stride, io.plane_stride)
            for _, slot, io in named
        }
        self._inputs = {name: (io, views[slot]) for name, slot, io in named if io.role == "input"}
        for _, slot, io in named:
            if io.role == "input":
                raw[slot].fill(0)
        # Anything the engine may write is cleared first: stale data never passes as a result.
        self._cleared = [raw[slot] for _, slot, io in named if io.role != "input"]
        self._outputs = [(name, views[slot]) for name, slot, io in named if io.role == "output"]
        slots: dict[int | str, int] = {s: bo.size for s, bo in self.buffers.items()}
        slots["btsp"] = self.btsp.size
        self._slots = MappingProxyType(slots)
        self._simulated = self.device.is_simulated

    # -- the command buffer ----------------------------------------------------------------

    def _write_image(self) -> None:
        """Microcode, zeros to the next 16 bytes, weights; the rest of the BO zeroed."""
        self.cmd.write(self.microcode)
        at = uapi.round_up(self.tsk_size, uapi.ANE_CMD_GRAN)
        self.cmd.zero(self.tsk_size, at - self.tsk_size)
        if isinstance(self.weights, bytes):
            at += self.cmd.write(self.weights, at)
        else:
            for chunk in self.weights.chunks():
                at += self.cmd.write(chunk, at)
        self.cmd.zero(at)
        self._holds = "image"
        self.uploads += 1

    def _write_container(self) -> None:
        """The container, then zeros to the BO's end, an even run of them (see `ODD_TAIL_FILL`)."""
        if self._container is None:
            raise SubmitValidationError(f"{self.label}: ONNX mode needs the container")
        written = _upload(self.cmd, self._container)
        self.cmd.zero(written)
        if written % 2 and (self.cmd.size - written) % 2:
            self.cmd.write(ODD_TAIL_FILL, written)
        self._holds = "container"
        self.uploads += 1

    # -- running ---------------------------------------------------------------------------

    def run(
        self, mode: SubmitMode = "direct", inputs: Mapping[str, np.ndarray] | None = None
    ) -> SubmitResult:
        """Lay out inputs, submit once, and read the outputs back.

        In ONNX mode the first run hands the kernel the container; the kernel translates it in
        place and writes the sizes back, and every later run resubmits that struct: no upload,
        no parse. Direct mode writes the image itself once.

        Raises:
            SubmitValidationError: An unknown mode, ONNX mode without a container, an unknown
                input name.
            AneDeviceError: The kernel failed the submit.
        """
        return self.run_prepared(mode, self._prepare(inputs or {}))

    def run_prepared(self, mode: SubmitMode, inputs: Mapping[str, np.ndarray]) -> SubmitResult:
        """`run` with inputs already checked: by slot name, each its slot's NCHW shape.

        For callers that have checked and converted inputs themselves (`AneModel`); the per-run
        path then only moves data.

        Raises:
            SubmitValidationError: An unknown mode, or ONNX mode without a container.
            AneDeviceError: The kernel failed the submit.
        """
        if mode not in ("onnx", "direct"):
            raise SubmitValidationError(f"{self.label}: mode must be 'onnx' or 'direct' ({mode!r})")
        start = time.perf_counter()
        translate = mode == "onnx" and self._submission is None
        if translate and self._holds != "container":
            self._write_container()
        elif not translate and self._holds != "image":
            self._write_image()
            self._submission = None
        for name, array in inputs.items():
            self._inputs[name][1][...] = array
        for buffer in self._cleared:
            buffer.fill(0)
        elapsed = self._submit(translate)
        return self._result(mode, translate, elapsed, time.perf_counter() - start)

    def _submit(self, translate: bool) -> float:
        start = time.perf_counter()
        try:
            if self._submission is not None:
                self.device.resubmit(self._submission)
            else:
                self._submission = self.device.submit(
                    tsk_size=self.tsk_size,
                    td_count=self.td_count,
                    td_size=self.td_size,
                    handles=self.buffers,
                    btsp=self.btsp,
                    flags=uapi.ANE_SUBMIT_FLAG_ONNX if translate else 0,
                )
        except AneDeviceError:
            self._after_failure(translate)
            raise
        if translate:
            self._holds = "image"
        return time.perf_counter() - start

    def _after_failure(self, translate: bool) -> None:
        """Keep a submit the kernel translated even when running it failed (say, ETIMEDOUT)."""
        submission = self._submission
        if not translate or submission is None:
            return
        if submission.request.pad == 0:
            self._holds = "image"  # the kernel rewrote the BO and wrote the sizes back
        else:
            self._submission = None  # refused before translating: the container is intact

    def _result(
        self, mode: SubmitMode, translated: bool, elapsed: float, total: float
    ) -> SubmitResult:
        request = self._submission.request if self._submission else None
        return SubmitResult(
            mode=mode,
            device=self.device.path,
            simulated=self._simulated,
            tsk_size=request.tsk_size if request else self.tsk_size,
            td_size=request.td_size if request else self.td_size,
            td_count=request.td_count if request else self.td_count,
            slots=self._slots,
            elapsed=elapsed,
            total=total,
            translated=translated,
            outputs=self._read_outputs(),
        )

    def _prepare(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``inputs`` checked against their slots (names, element counts) and in NCHW shape."""
        unknown = inputs.keys() - self._inputs.keys()
        if unknown:
            raise SubmitValidationError(
                f"{self.label}: unknown input(s) {sorted(unknown)}; inputs are "
                f"{sorted(self._inputs)}"
            )
        prepared = {}
        for name, value in inputs.items():
            io = self._inputs[name][0]
            array = np.asarray(value)
            if array.size != io.n * io.c * io.h * io.w:
                raise InputError(
                    f"{self.label}: input {name!r} has {array.size} elements {array.shape}; "
                    f"its slot holds {io.n}x{io.c}x{io.h}x{io.w}"
                )
            try:
                half = to_fp16(array)
            except (TypeError, ValueError) as exc:
                raise InputError(
                    f"{self.label}: input {name!r}: cannot convert {array.dtype} data to fp16"
                ) from exc
            prepared[name] = half.reshape(io.n, io.c, io.h, io.w)
        return prepared

    def write_region(self, name: str, values: np.ndarray, *, row: int = 0, column: int = 0) -> int:
        """Write a block into part of an input's buffer, in the ANE layout; leave the rest as is.

        ``values`` is ``(N, C, h, w)`` (lower ranks get leading 1s) with the slot's N and C; it
        lands at rows ``row`` to ``row + h`` and columns ``column`` to ``column + w`` of every
        plane. A state the program reads every run (a KV cache, a mask) then takes its new rows
        in place instead of being laid out whole again. `run` leaves inputs it is not given as
        they are.

        Returns:
            Bytes of tensor data written.

        Raises:
            SubmitValidationError: The program has no input of that name.
            InputError: The block has another N or C, or does not fit the tensor at that place.
        """
        entry = self._inputs.get(name)
        if entry is None:
            raise SubmitValidationError(f"{self.label}: no input {name!r}")
        io, view = entry
        block = to_fp16(values)
        if block.ndim > 4:
            raise InputError(f"{self.label}: input {name!r}: a block of rank {block.ndim}")
        n, c, h, w = (1,) * (4 - block.ndim) + block.shape
        if (n, c) != (io.n, io.c) or min(row, column) < 0 or row + h > io.h or column + w > io.w:
            raise InputError(
                f"{self.label}: input {name!r} ({io.n}x{io.c}x{io.h}x{io.w}) cannot take a "
                f"{n}x{c}x{h}x{w} block at row {row}, column {column}"
            )
        view[:, :, row : row + h, column : column + w] = block.reshape(n, c, h, w)
        return block.size * 2

    def _read_outputs(self) -> dict[str, np.ndarray]:
        return {name: view.astype(np.float16) for name, view in self._outputs}

    def close(self) -> None:
        """Free every BO of the program. Idempotent."""
        # The views export the BO mappings: dropped first, the BOs unmap as they are freed.
        self._inputs, self._cleared, self._outputs = {}, [], []
        self._stack.close()


def _upload(bo: BufferObject, container: Path | bytes) -> int:
    """Copy the container into the BO without an intermediate copy of the whole file."""
    if isinstance(container, bytes):
        return bo.write(container)
    view = bo.view
    pos = 0
    with open_regular(container, "container", ModelFileError) as f:
        reader = cast(BufferedReader, f)  # what open() returns; BinaryIO lacks readinto
        while True:
            n = reader.readinto(view[pos : pos + _COPY_CHUNK])
            if not n:
                return pos
            pos += n
