"""Task descriptor chains (H13/M1): walk a microcode chain and build the bootstrap buffer.

Pure functions over bytes. This module must not touch devices or files: callers pass payloads in.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .._typing import BytesLike
from ..driver.uapi import (
    ANE_FIFO_NID,
    TD_COUNT_LIMIT,
    TD_MIN_SIZE,
    TD_NEXT_OFFSET_WORD,
    TD_NEXT_SIZE_MASK,
    TD_NEXT_SIZE_SHIFT,
    TD_NID_MASK,
    TD_NID_SHIFT,
    TD_WORD0_EON,
)
from ..errors import DescriptorChainError


@dataclass(frozen=True)
class Descriptor:
    """One task descriptor inside a chain."""

    offset: int
    size: int
    task_id: int
    network_id: int
    last: bool


@dataclass(frozen=True)
class DescriptorChain:
    """A walked chain: its descriptors and the submit parameters it implies."""

    descriptors: tuple[Descriptor, ...]

    @property
    def td_size(self) -> int:
        """Size in bytes of the first descriptor (what DRM_IOCTL_ANE_SUBMIT calls ``td_size``)."""
        return self.descriptors[0].size

    @property
    def td_count(self) -> int:
        """Number of descriptors in the chain."""
        return len(self.descriptors)

    @property
    def tsk_size(self) -> int:
        """Offset of the last descriptor plus its size."""
        last = self.descriptors[-1]
        return last.offset + last.size


def _where(source: str | None) -> str:
    return f"{source}: " if source else ""


def _word(data: memoryview, offset: int, index: int) -> int:
    value: int = struct.unpack_from("<I", data, offset + 4 * index)[0]
    return value


def _check_size(size: int, what: str, offset: int, length: int, source: str | None) -> None:
    if size < TD_MIN_SIZE or size % 4:
        raise DescriptorChainError(
            f"{_where(source)}{what} at byte 0x{offset:x} has size {size} (0x{size:x}); a "
            f"descriptor is a positive multiple of 4 bytes and at least {TD_MIN_SIZE}"
        )
    if offset + size > length:
        raise DescriptorChainError(
            f"{_where(source)}{what} at byte 0x{offset:x} with size 0x{size:x} ends at "
            f"0x{offset + size:x}, past the end of the microcode (0x{length:x} bytes)"
        )


def infer_td_size(microcode: BytesLike, *, source: str | None = None) -> int:
    """Infer the first descriptor's size from the chain itself.

    The chain encodes the size of every descriptor but the first. A single-descriptor chain spans
    the whole microcode; a longer one is taken to use one descriptor size throughout (what anecc
    emits), read from the first descriptor's next-size field.

    Raises:
        DescriptorChainError: The microcode is too short to hold a descriptor.
    """
    data = memoryview(microcode).cast("B")
    if len(data) < TD_MIN_SIZE:
        raise DescriptorChainError(
            f"{_where(source)}microcode is {len(data)} bytes, shorter than one descriptor "
            f"({TD_MIN_SIZE} bytes)"
        )
    if _word(data, 0, 0) & TD_WORD0_EON:
        return len(data) - len(data) % 4
    return ((_word(data, 0, 1) >> TD_NEXT_SIZE_SHIFT & TD_NEXT_SIZE_MASK) + 1) * 4


def walk_chain(
    microcode: BytesLike, td_size: int | None = None, *, source: str | None = None
) -> DescriptorChain:
    """Walk the descriptor chain at the start of ``microcode``.

    Args:
        microcode: The microcode bytes (trailing padding is allowed).
        td_size: Size of the first descriptor; inferred with `infer_td_size` when None.
        source: A file name or label used in error messages.

    Returns:
        The chain, with ``td_size``, ``td_count`` and ``tsk_size``.

    Raises:
        DescriptorChainError: The chain runs out of the buffer, points backwards or into the
            previous descriptor (a loop), has a malformed size, or exceeds the count limit.
    """
    data = memoryview(microcode).cast("B")
    if td_size is None:
        td_size = infer_td_size(data, source=source)
    length = len(data)
    offset, size = 0, td_size
    descriptors: list[Descriptor] = []
    while True:
        index = len(descriptors)
        what = f"descriptor {index}"
        _check_size(size, what, offset, length, source)
        word0 = _word(data, offset, 0)
        last = bool(word0 & TD_WORD0_EON)
        descriptors.append(
            Descriptor(
                offset=offset,
                size=size,
                task_id=word0 & 0xFFFF,
                network_id=(word0 & TD_NID_MASK) >> TD_NID_SHIFT,
                last=last,
            )
        )
        if last:
            return DescriptorChain(tuple(descriptors))
        if len(descriptors) >= TD_COUNT_LIMIT - 1:
            raise DescriptorChainError(
                f"{_where(source)}chain has more than {TD_COUNT_LIMIT - 1} descriptors without "
                "an end-of-network flag"
            )
        next_offset = _word(data, offset, TD_NEXT_OFFSET_WORD)
        next_size = ((_word(data, offset, 1) >> TD_NEXT_SIZE_SHIFT & TD_NEXT_SIZE_MASK) + 1) * 4
        if next_offset < offset + size:
            raise DescriptorChainError(
                f"{_where(source)}{what} at byte 0x{offset:x} has no end-of-network flag and its "
                f"next-descriptor offset 0x{next_offset:x} points back into the chain (it must be "
                f"at least 0x{offset + size:x}); the chain would loop"
            )
        if next_offset % 4:
            raise DescriptorChainError(
                f"{_where(source)}{what} at byte 0x{offset:x} points to unaligned offset "
                f"0x{next_offset:x}"
            )
        if next_offset >= length:
            raise DescriptorChainError(
                f"{_where(source)}{what} at byte 0x{offset:x} points to offset 0x{next_offset:x}, "
                f"past the end of the microcode (0x{length:x} bytes); is the end-of-network flag "
                "missing?"
            )
        offset, size = next_offset, next_size


def check_chain(
    chain: DescriptorChain,
    *,
    td_size: int | None = None,
    td_count: int | None = None,
    tsk_size: int | None = None,
    source: str | None = None,
) -> None:
    """Raise `DescriptorChainError` when ``chain`` disagrees with stated parameters."""
    for name, stated, actual in (
        ("td_size", td_size, chain.td_size),
        ("td_count", td_count, chain.td_count),
        ("tsk_size", tsk_size, chain.tsk_size),
    ):
        if stated is not None and stated != actual:
            raise DescriptorChainError(
                f"{_where(source)}{name} is {stated} (0x{stated:x}) but the descriptor chain "
                f"gives {actual} (0x{actual:x})"
            )


def build_bootstrap(microcode: BytesLike, td_size: int, *, source: str | None = None) -> bytes:
    """Return the bootstrap buffer: the first descriptor with its network id set to the FIFO id.

    Raises:
        DescriptorChainError: ``td_size`` is malformed or larger than the microcode.
    """
    data = memoryview(microcode).cast("B")
    _check_size(td_size, "descriptor 0", 0, len(data), source)
    btsp = bytearray(data[:td_size])
    word0 = _word(data, 0, 0)
    struct.pack_into("<I", btsp, 0, (word0 & ~TD_NID_MASK) | (ANE_FIFO_NID << TD_NID_SHIFT))
    return bytes(btsp)
