"""Reader for ``.anec``/``.ane`` files (what ``anecc`` writes): header, payload ranges, tile slots.

Reads only the fixed header and the (small) microcode; the weights are returned as a file range and
never loaded. This module must not write files or touch devices.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .._fs import open_regular, os_problem
from .._typing import StrPath
from ..driver.uapi import ANE_CMD_GRAN, ANE_TILE_COUNT, PAGE_SIZE, TD_COUNT_LIMIT, round_up
from ..errors import AnecFormatError, ArtifactError
from .microcode import DescriptorChain, walk_chain
from .microcode import check_chain as check_descriptor_chain
from .payload import IoSlot, PayloadRef

logger = logging.getLogger(__name__)

ANEC_HEADER_SIZE = 0x6A8
ANEC_PAYLOAD_OFFSET = 0x1000
# An older library reads the payload here; real anecc files use ANEC_PAYLOAD_OFFSET.
ANEC_LEGACY_PAYLOAD_OFFSET = 0x800
STRIDE_ALIGN = 64
FP16_SIZE = 2
# Far above any real chain (0xFFFF descriptors of at most 2 KiB each, plus gaps); a larger
# tsk_size is a corrupt header, and reading it would pull a multi-GB file into memory.
MAX_TSK_SIZE = 256 << 20

# size, td_size, td_count, tsk_size, krn_size, src_count, dst_count, tiles[32], nchw[32][6]
_HEADER = struct.Struct(f"<QIIQQII{ANE_TILE_COUNT}I{ANE_TILE_COUNT * 6}Q")
_NCHW_FIELDS = ("N", "C", "H", "W", "plane stride", "row stride")

Role = Literal["input", "output", "scratch"]


@dataclass(frozen=True)
class AnecHeader:
    """The packed 0x6A8-byte ``.anec`` header (all fields little-endian).

    Attributes:
        size: Payload bytes after the header area.
        td_size: Size of the first task descriptor.
        td_count: Number of task descriptors.
        tsk_size: Microcode bytes.
        krn_size: Weight bytes (after the microcode, padded to 16).
        src_count: Number of input tensors.
        dst_count: Number of output tensors.
        tiles: Per slot, BO size in 16 KiB units (32 entries).
        nchw: Per slot, ``(N, C, H, W, plane stride, row stride)`` (32 entries).
    """

    size: int
    td_size: int
    td_count: int
    tsk_size: int
    krn_size: int
    src_count: int
    dst_count: int
    tiles: tuple[int, ...]
    nchw: tuple[tuple[int, int, int, int, int, int], ...]

    @classmethod
    def unpack(cls, data: bytes) -> AnecHeader:
        """Decode the first 0x6A8 bytes of ``data``.

        Raises:
            AnecFormatError: ``data`` is shorter than the header.
        """
        if len(data) < ANEC_HEADER_SIZE:
            raise AnecFormatError(f"header needs 0x{ANEC_HEADER_SIZE:x} bytes, got 0x{len(data):x}")
        fields = _HEADER.unpack_from(data)
        tiles = tuple(fields[7 : 7 + ANE_TILE_COUNT])
        flat = fields[7 + ANE_TILE_COUNT :]
        nchw = tuple(
            (flat[i], flat[i + 1], flat[i + 2], flat[i + 3], flat[i + 4], flat[i + 5])
            for i in range(0, 6 * ANE_TILE_COUNT, 6)
        )
        size, td_size, td_count, tsk_size, krn_size, src_count, dst_count = fields[:7]
        return cls(
            size=size,
            td_size=td_size,
            td_count=td_count,
            tsk_size=tsk_size,
            krn_size=krn_size,
            src_count=src_count,
            dst_count=dst_count,
            tiles=tiles,
            nchw=nchw,
        )

    def pack(self) -> bytes:
        """Encode the header (0x6A8 bytes, without the zero padding up to the payload).

        Raises:
            AnecFormatError: A field does not fit its width or a table has the wrong length.
        """
        if len(self.tiles) != ANE_TILE_COUNT or len(self.nchw) != ANE_TILE_COUNT:
            raise AnecFormatError(f"tiles and nchw need {ANE_TILE_COUNT} entries each")
        values = [self.size, self.td_size, self.td_count, self.tsk_size, self.krn_size]
        values += [self.src_count, self.dst_count, *self.tiles]
        values += [v for row in self.nchw for v in row]
        try:
            return _HEADER.pack(*values)
        except struct.error as exc:
            raise AnecFormatError(f"header field out of range: {exc}") from exc

    @property
    def weights_offset(self) -> int:
        """Offset of the weights within the payload (microcode rounded up to 16 bytes)."""
        return round_up(self.tsk_size, ANE_CMD_GRAN)

    def described(self, slot: int) -> bool:
        """Whether the header gives ``slot`` a tile size or a tensor shape."""
        return bool(self.tiles[slot]) or any(self.nchw[slot])


@dataclass(frozen=True)
class SlotConvention:
    """Which tile slot plays which role; data rather than code because real programs differ.

    The default is what ``anecc`` emits: 0 command buffer, 1 weights (derived by the kernel),
    2 and 3 intermediate scratch, outputs from slot 4, then inputs.
    """

    command: int = 0
    weights: int = 1
    scratch: tuple[int, ...] = (2, 3)
    first_output: int = 4

    def roles(self, dst_count: int, src_count: int) -> dict[int, Role]:
        """Map tensor slots to roles for a program with these output/input counts.

        Only the `ANE_TILE_COUNT` real slots are mapped, whatever the counts claim.
        """
        roles: dict[int, Role] = dict.fromkeys(self.scratch, "scratch")
        first_input = self.first_output + dst_count
        for slot in range(self.first_output, min(first_input, ANE_TILE_COUNT)):
            roles[slot] = "output"
        for slot in range(first_input, min(first_input + src_count, ANE_TILE_COUNT)):
            roles[slot] = "input"
        return roles


ANECC_SLOTS = SlotConvention()


@dataclass(frozen=True)
class AnecFile:
    """A validated ``.anec`` file: header, payload ranges, descriptor chain and tile slots.

    Attributes:
        path: The file.
        payload_offset: Where the payload starts in the file.
        header: The decoded header.
        microcode: File range of the microcode (``tsk_size`` bytes).
        weights: File range of the weights, or None when ``krn_size`` is 0.
        chain: The walked descriptor chain (agrees with the header); None when the file was
            read with ``check_chain=False``.
        io: Tensor slots keyed by slot number.
        tiles: BO size in bytes per slot, for every slot with a non-zero tile.
    """

    path: Path
    payload_offset: int
    header: AnecHeader
    microcode: PayloadRef
    weights: PayloadRef | None
    chain: DescriptorChain | None
    io: dict[int, IoSlot]
    tiles: dict[int, int]

    @property
    def td_size(self) -> int:
        """Size of the first descriptor."""
        return self.header.td_size

    @property
    def td_count(self) -> int:
        """Number of descriptors."""
        return self.header.td_count


def read_anec(
    path: StrPath,
    *,
    payload_offset: int = ANEC_PAYLOAD_OFFSET,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    slots: SlotConvention = ANECC_SLOTS,
    check_chain: bool = True,
) -> AnecFile:
    """Read and validate an ``.anec``/``.ane`` file without loading its weights.

    Args:
        path: The file.
        payload_offset: Where the payload starts (0x1000 for anecc output; 0x800 for files made
            for an older library).
        input_names: Tensor names of the inputs, in slot order; ``input0``... by default.
        output_names: Tensor names of the outputs, in slot order; ``output0``... by default.
        slots: The slot convention used to give slots their roles.
        check_chain: Walk the microcode's descriptor chain and check it against the header
            (off for programs whose chains this tool does not understand).

    Returns:
        The validated file.

    Raises:
        ArtifactError: The file cannot be opened or read.
        AnecFormatError: The header disagrees with itself or with the file (the message names the
            file, the field and its value).
        DescriptorChainError: The microcode's descriptor chain is broken or disagrees with the
            header's ``td_size``/``td_count``/``tsk_size``.
    """
    path = Path(path)
    with open_regular(path, ".anec file", ArtifactError) as f:
        file_size = os.fstat(f.fileno()).st_size
        try:
            head = f.read(ANEC_HEADER_SIZE)
            header = _validate_header(path, head, file_size, payload_offset)
            _validate_slots(path, header, slots)
            f.seek(payload_offset)
            microcode = f.read(header.tsk_size)
        except OSError as exc:
            raise ArtifactError(f".anec file {path}: {os_problem(path, exc)}") from exc
    if len(microcode) != header.tsk_size:
        raise AnecFormatError(f"{path}: file shrank while reading the microcode")
    chain = _header_chain(path, header, microcode) if check_chain else None
    weights = None
    if header.krn_size:
        weights = PayloadRef.from_file(
            path, payload_offset + header.weights_offset, header.krn_size
        )
    io = _io_slots(path, header, slots, input_names, output_names)
    tiles = {slot: units * PAGE_SIZE for slot, units in enumerate(header.tiles) if units}
    logger.debug(
        "%s: td_size=%d td_count=%d tsk_size=%d krn_size=%d",
        path,
        header.td_size,
        header.td_count,
        header.tsk_size,
        header.krn_size,
    )
    return AnecFile(
        path=path,
        payload_offset=payload_offset,
        header=header,
        microcode=PayloadRef.from_file(path, payload_offset, header.tsk_size),
        weights=weights,
        chain=chain,
        io=io,
        tiles=tiles,
    )


def _header_chain(path: Path, header: AnecHeader, microcode: bytes) -> DescriptorChain:
    chain = walk_chain(
        microcode, header.td_size, source=f"{path} (header td_size=0x{header.td_size:x})"
    )
    check_descriptor_chain(
        chain, td_count=header.td_count, tsk_size=header.tsk_size, source=f"{path} (header)"
    )
    return chain


def _validate_header(path: Path, head: bytes, file_size: int, payload_offset: int) -> AnecHeader:
    if payload_offset < ANEC_HEADER_SIZE:
        raise AnecFormatError(
            f"{path}: payload offset 0x{payload_offset:x} lies inside the "
            f"0x{ANEC_HEADER_SIZE:x}-byte header"
        )
    if file_size < ANEC_HEADER_SIZE or len(head) < ANEC_HEADER_SIZE:
        raise AnecFormatError(
            f"{path}: file is {file_size} bytes, shorter than the 0x{ANEC_HEADER_SIZE:x}-byte "
            ".anec header; not an .anec file or truncated"
        )
    if file_size < payload_offset:
        raise AnecFormatError(
            f"{path}: file is 0x{file_size:x} bytes, shorter than the payload offset "
            f"0x{payload_offset:x}; truncated"
        )
    header = AnecHeader.unpack(head)
    available = file_size - payload_offset
    if header.size != available:
        hint = "truncated" if header.size > available else "trailing bytes after the payload"
        for other in (ANEC_PAYLOAD_OFFSET, ANEC_LEGACY_PAYLOAD_OFFSET):
            if other != payload_offset and header.size == file_size - other:
                hint = f"the payload would fit at offset 0x{other:x}; pass that payload offset"
        raise AnecFormatError(
            f"{path}: header field size=0x{header.size:x} but the file holds 0x{available:x} "
            f"bytes after the payload offset 0x{payload_offset:x} ({hint})"
        )
    if not 0 < header.tsk_size <= MAX_TSK_SIZE:
        raise AnecFormatError(
            f"{path}: header field tsk_size=0x{header.tsk_size:x} must be between 1 and "
            f"0x{MAX_TSK_SIZE:x} (the microcode size)"
        )
    if header.td_size == 0 or header.td_size % 4 or header.td_size > header.tsk_size:
        raise AnecFormatError(
            f"{path}: header field td_size=0x{header.td_size:x} must be a positive multiple of 4 "
            f"no larger than tsk_size=0x{header.tsk_size:x}"
        )
    if not 0 < header.td_count < TD_COUNT_LIMIT:
        raise AnecFormatError(
            f"{path}: header field td_count={header.td_count} must be between 1 and "
            f"{TD_COUNT_LIMIT - 1}"
        )
    expected = header.weights_offset + header.krn_size
    # With no weights a writer may or may not pad the microcode; both describe the same program.
    if header.size != expected and not (header.krn_size == 0 and header.size == header.tsk_size):
        raise AnecFormatError(
            f"{path}: header field size=0x{header.size:x} but tsk_size=0x{header.tsk_size:x} "
            f"padded to {ANE_CMD_GRAN} plus krn_size=0x{header.krn_size:x} is 0x{expected:x}"
        )
    return header


def _validate_slots(path: Path, header: AnecHeader, slots: SlotConvention) -> None:
    io_end = slots.first_output + header.dst_count + header.src_count
    if io_end > ANE_TILE_COUNT:
        raise AnecFormatError(
            f"{path}: header fields dst_count={header.dst_count} and "
            f"src_count={header.src_count} need slots {slots.first_output}..{io_end - 1}, but "
            f"there are only {ANE_TILE_COUNT} slots"
        )
    roles = slots.roles(header.dst_count, header.src_count)
    command_bytes = header.tiles[slots.command] * PAGE_SIZE
    if command_bytes < header.size or command_bytes <= header.tsk_size:
        raise AnecFormatError(
            f"{path}: header field tiles[{slots.command}]={header.tiles[slots.command]} "
            f"({command_bytes} bytes) is too small for the command buffer payload "
            f"(size=0x{header.size:x})"
        )
    if header.described(slots.weights):
        raise AnecFormatError(
            f"{path}: slot {slots.weights} is the weights slot, which the kernel derives, but the "
            f"header gives it tiles[{slots.weights}]={header.tiles[slots.weights]}, "
            f"nchw={header.nchw[slots.weights]}"
        )
    for slot in range(ANE_TILE_COUNT):
        if slot == slots.command:
            continue
        role = roles.get(slot)
        if role is None:
            if header.described(slot):
                raise AnecFormatError(
                    f"{path}: slot {slot} has tiles[{slot}]={header.tiles[slot]}, "
                    f"nchw={header.nchw[slot]}, but dst_count={header.dst_count} and "
                    f"src_count={header.src_count} account only for slots "
                    f"{slots.first_output}..{io_end - 1}"
                )
            continue
        if role == "scratch" and not header.described(slot):
            continue
        _validate_tensor_slot(path, header, slot, role)


def _validate_tensor_slot(path: Path, header: AnecHeader, slot: int, role: Role) -> None:
    n, c, h, w, plane, row = header.nchw[slot]
    tile_bytes = header.tiles[slot] * PAGE_SIZE
    where = f"{path}: slot {slot} ({role})"
    if not tile_bytes:
        raise AnecFormatError(f"{where}: header field tiles[{slot}]=0; the slot has no buffer")
    if role == "scratch" and not any(header.nchw[slot]):
        return
    for name, value in zip(_NCHW_FIELDS, header.nchw[slot], strict=True):
        if value == 0:
            raise AnecFormatError(f"{where}: header field nchw[{slot}] {name}=0")
    if row < w * FP16_SIZE:
        raise AnecFormatError(
            f"{where}: row stride {row} is smaller than W*2 = {w * FP16_SIZE} bytes"
        )
    if plane < row * h:
        raise AnecFormatError(
            f"{where}: plane stride {plane} is smaller than row stride * H = {row * h} bytes"
        )
    for name, value in (("row stride", row), ("plane stride", plane)):
        if value % STRIDE_ALIGN:
            raise AnecFormatError(
                f"{where}: {name} {value} is not a multiple of {STRIDE_ALIGN} bytes"
            )
    if n * c * plane > tile_bytes:
        raise AnecFormatError(
            f"{where}: buffer N*C*plane stride = {n}*{c}*{plane} = {n * c * plane} bytes is "
            f"larger than its tile tiles[{slot}]={header.tiles[slot]} ({tile_bytes} bytes)"
        )


def _io_slots(
    path: Path,
    header: AnecHeader,
    slots: SlotConvention,
    input_names: Sequence[str] | None,
    output_names: Sequence[str] | None,
) -> dict[int, IoSlot]:
    names: dict[Role, Sequence[str] | None] = {"input": input_names, "output": output_names}
    counts: dict[Role, int] = {"input": header.src_count, "output": header.dst_count}
    for role in ("input", "output"):
        given = names[role]
        if given is not None and len(given) != counts[role]:
            raise AnecFormatError(
                f"{path}: {len(given)} {role} name(s) given but the header describes "
                f"{counts[role]} {role}(s)"
            )
    io: dict[int, IoSlot] = {}
    seen: dict[Role, int] = {"input": 0, "output": 0, "scratch": 0}
    for slot, role in sorted(slots.roles(header.dst_count, header.src_count).items()):
        if role == "scratch" and not header.described(slot):
            continue
        k = seen[role]
        seen[role] += 1
        given = names.get(role)
        name = None if role == "scratch" else (given[k] if given else f"{role}{k}")
        n, c, h, w, plane, row = header.nchw[slot]
        io[slot] = IoSlot(
            role=role, name=name, n=n, c=c, h=h, w=w, plane_stride=plane, row_stride=row
        )
    return io
