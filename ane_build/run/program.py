"""Submit an ONNX container (or bare payloads) to an `ANEDevice`: BO layout, bootstrap, I/O.

`AneProgram` allocates a program's BOs once and submits many times; `submit_onnx_model` is the
one-shot form. Every BO is freed on every path. This module must not parse ONNX graphs and must
not decide which device to use.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from .._resource import Closing
from .._typing import StrPath
from ..container import AneModelMetadata, parse_ane_metadata, read_ane_payloads
from ..driver import uapi
from ..driver.device import ANEDevice, BufferObject
from ..errors import AneError, SubmitValidationError
from ..formats.microcode import build_bootstrap, check_chain, walk_chain
from ..formats.payload import IoSlot
from ..formats.tiling import tile, untile

log = logging.getLogger(__name__)

SubmitMode = Literal["onnx", "direct"]
_COPY_CHUNK = 8 << 20


@dataclass(frozen=True)
class SubmitResult:
    """What one submission did.

    Attributes:
        mode: ``"onnx"`` (kernel translates the container) or ``"direct"``.
        device: The device node path.
        simulated: True when the device is the simulator: outputs are not hardware results.
        tsk_size: The microcode size submitted.
        td_size: First descriptor size.
        td_count: Descriptor count.
        slots: BO size per slot used (slot -> bytes), the bootstrap under key ``"btsp"``.
        elapsed: Seconds spent in the submit ioctl.
        outputs: Output tensors read back from their BOs (fp16 NCHW), by name.
    """

    mode: SubmitMode
    device: str
    simulated: bool
    tsk_size: int
    td_size: int
    td_count: int
    slots: Mapping[int | str, int]
    elapsed: float
    outputs: Mapping[str, np.ndarray] = field(default_factory=dict)

    def describe(self) -> str:
        """One human line: what ran where."""
        where = "the simulator (not a hardware result)" if self.simulated else self.device
        slots = ", ".join(f"{k}:{v}" for k, v in self.slots.items())
        return (
            f"submitted in {self.mode} mode to {where}: tsk_size=0x{self.tsk_size:x} "
            f"td_size=0x{self.td_size:x} td_count={self.td_count}, BOs [{slots}], "
            f"{self.elapsed * 1e3:.2f} ms"
        )


class AneProgram(Closing):
    """A program's buffer objects, allocated once and submitted many times.

    Layout: slot 0 is the command buffer (microcode, zero padding to 16, weights; in ONNX mode the
    whole container, which the fork kernel rewrites into that layout), slot 1 stays empty, slots
    from ``tiles`` (2 and up) get zeroed BOs, and the bootstrap BO holds the first descriptor with
    the FIFO network id.
    """

    def __init__(
        self,
        device: ANEDevice,
        *,
        microcode: bytes,
        td_size: int,
        td_count: int,
        weights: bytes = b"",
        tiles: Mapping[int, int] | None = None,
        io: Mapping[int, IoSlot] | None = None,
        container: Path | bytes | None = None,
        label: str = "program",
    ) -> None:
        """Allocate and fill the BOs.

        Args:
            device: Where to allocate.
            microcode: The descriptor chain.
            td_size: First descriptor size.
            td_count: Descriptor count.
            weights: Kernel weights placed after the microcode.
            tiles: BO size in bytes per slot (slots 0 and 1 are ignored here).
            io: Tensors per slot, for `run` inputs and outputs.
            container: The ONNX container (a path or bytes) for ONNX-mode submits.
            label: Name used in messages.

        Raises:
            DescriptorChainError: The chain disagrees with ``td_size``/``td_count``.
            AneDeviceError: Allocation failed (nothing stays allocated).
        """
        chain = walk_chain(microcode, td_size, source=label)
        check_chain(chain, td_size=td_size, td_count=td_count, source=label)
        self.device = device
        self.label = label
        self.td_size, self.td_count = td_size, td_count
        self.tsk_size = len(microcode)
        self.io = dict(io or {})
        self._container = container
        pad = uapi.round_up(len(microcode), uapi.ANE_CMD_GRAN) - len(microcode)
        self._image = bytes(microcode) + bytes(pad) + weights
        container_len = _container_length(container)
        cmd_size = max(len(self._image), container_len, self.tsk_size + 1)
        self._stack = ExitStack()
        try:
            self.cmd = self._stack.enter_context(device.allocate(cmd_size))
            self.btsp = self._stack.enter_context(device.allocate(td_size))
            self.btsp.write(build_bootstrap(microcode, td_size, source=label))
            self.buffers: dict[int, BufferObject] = {0: self.cmd}
            for slot, size in sorted((tiles or {}).items()):
                if slot in (0, 1):
                    continue
                if not 0 <= slot < uapi.ANE_TILE_COUNT or size <= 0:
                    raise SubmitValidationError(f"{label}: tiles[{slot}] = {size}: invalid slot")
                self.buffers[slot] = self._stack.enter_context(device.allocate(size))
            for slot in self.io:
                if slot not in self.buffers:
                    raise SubmitValidationError(
                        f"{label}: ane.io names slot {slot} but ane.tiles gives it no buffer"
                    )
        except BaseException:
            self._stack.close()
            raise

    def run(
        self, mode: SubmitMode = "direct", inputs: Mapping[str, np.ndarray] | None = None
    ) -> SubmitResult:
        """Fill slot 0 for ``mode``, lay out inputs, submit once, and read outputs back.

        Raises:
            SubmitValidationError: ONNX mode without a container, or an unknown input name.
            AneDeviceError: The kernel failed the submit.
        """
        flags = 0
        if mode == "onnx":
            if self._container is None:
                raise SubmitValidationError(f"{self.label}: ONNX mode needs the container")
            written = _upload_container(self.cmd, self._container)
            flags = uapi.ANE_SUBMIT_FLAG_ONNX
        elif mode == "direct":
            written = self.cmd.write(self._image)
        else:
            raise SubmitValidationError(f"{self.label}: mode must be 'onnx' or 'direct' ({mode!r})")
        self.cmd.zero(written)
        self._write_inputs(inputs or {})
        start = time.perf_counter()
        self.device.submit(
            tsk_size=self.tsk_size,
            td_count=self.td_count,
            td_size=self.td_size,
            handles=self.buffers,
            btsp=self.btsp,
            flags=flags,
        )
        elapsed = time.perf_counter() - start
        slots: dict[int | str, int] = {s: bo.size for s, bo in self.buffers.items()}
        slots["btsp"] = self.btsp.size
        return SubmitResult(
            mode=mode,
            device=self.device.path,
            simulated=self.device.is_simulated,
            tsk_size=self.tsk_size,
            td_size=self.td_size,
            td_count=self.td_count,
            slots=slots,
            elapsed=elapsed,
            outputs=self._read_outputs(),
        )

    def _write_inputs(self, inputs: Mapping[str, np.ndarray]) -> None:
        by_name = {
            io.name or f"slot{slot}": slot for slot, io in self.io.items() if io.role == "input"
        }
        unknown = set(inputs) - set(by_name)
        if unknown:
            raise SubmitValidationError(
                f"{self.label}: unknown input(s) {sorted(unknown)}; inputs are {sorted(by_name)}"
            )
        for slot, io in self.io.items():
            bo = self.buffers[slot]
            name = io.name or f"slot{slot}"
            if io.role == "input" and name in inputs:
                array = np.asarray(inputs[name]).reshape(io.n, io.c, io.h, io.w)
                tile(array, row_stride=io.row_stride, plane_stride=io.plane_stride, out=bo.view)
            elif io.role != "input":
                bo.zero()

    def _read_outputs(self) -> dict[str, np.ndarray]:
        outputs = {}
        for slot, io in self.io.items():
            if io.role == "output":
                outputs[io.name or f"slot{slot}"] = untile(
                    self.buffers[slot].view, io.n, io.c, io.h, io.w, io.row_stride, io.plane_stride
                )
        return outputs

    def close(self) -> None:
        """Free every BO of the program. Idempotent."""
        self._stack.close()


def _container_length(container: Path | bytes | None) -> int:
    if container is None:
        return 0
    if isinstance(container, bytes):
        return len(container)
    return os.stat(container).st_size


def _upload_container(bo: BufferObject, container: Path | bytes) -> int:
    """Copy the container into the BO without an intermediate copy of the whole file."""
    if isinstance(container, bytes):
        return bo.write(container)
    view = bo.view
    pos = 0
    with open(container, "rb") as f:
        while True:
            n = f.readinto(view[pos : pos + _COPY_CHUNK])
            if not n:
                return pos
            pos += n


def submit_onnx_model(
    device: ANEDevice,
    model: StrPath | bytes,
    metadata: AneModelMetadata | None = None,
    *,
    mode: SubmitMode = "onnx",
    inputs: Mapping[str, np.ndarray] | None = None,
) -> SubmitResult:
    """Upload an ``_ane.onnx`` container's program and submit it once; free everything after.

    Args:
        device: The device (hardware or simulator).
        model: Path to the container, or its bytes.
        metadata: Parsed metadata, when the caller already has it.
        mode: ``"onnx"`` lets the fork kernel translate the container in slot 0;
            ``"direct"`` lays out microcode and weights here (works on the stock driver too).
        inputs: Input tensors by name (``ane.io``), tiled into their BOs.

    Raises:
        AneError: Invalid metadata, a descriptor chain that disagrees, or a failed submit.
    """
    source = model if isinstance(model, bytes) else Path(model)
    label = "<bytes>" if isinstance(source, bytes) else str(source)
    metadata = parse_ane_metadata(source) if metadata is None else metadata
    payloads = read_ane_payloads(source)
    try:
        with AneProgram(
            device,
            microcode=payloads.microcode,
            td_size=metadata.td_size,
            td_count=metadata.td_count,
            weights=payloads.weights,
            tiles=metadata.tiles,
            io=metadata.io,
            container=source if mode == "onnx" else None,
            label=label,
        ) as program:
            result = program.run(mode, inputs)
    except AneError:
        log.debug("submit of %s failed", label, exc_info=True)
        raise
    log.info("%s: %s", label, result.describe())
    return result
