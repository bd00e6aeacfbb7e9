"""Synthetic compiler output: structurally valid descriptor chains and weights, deterministic.

For tests, benchmarks and the example project only. The bytes follow the descriptor format
(DESIGN section 5) so every check we and the simulator apply passes, but they are NOT real ANE
code and must never be presented as such or sent to hardware as a meaningful program.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from ..driver.uapi import TD_MIN_SIZE, TD_NEXT_OFFSET_WORD, TD_NEXT_SIZE_SHIFT, TD_WORD0_EON
from ..errors import InvalidArgumentError

M1_TD_SIZE = 0x274
# Recorded in the toolchain text of every synthetic container; deploys keep those off hardware.
SYNTHETIC_MARK = "not real ANE code"
# anecc aligns each descriptor after the first to 0x100 (see the concat sample: 0x274 -> 0x300).
DESCRIPTOR_ALIGN = 0x100


def make_chain(
    count: int,
    td_size: int = M1_TD_SIZE,
    *,
    align: int = DESCRIPTOR_ALIGN,
    network_id: int = 0,
    seed: int = 0,
    sizes: Sequence[int] | None = None,
    fill: int | None = None,
) -> bytes:
    """Return microcode holding ``count`` descriptors of ``td_size`` bytes each.

    Descriptor ``k + 1`` starts at the first multiple of ``align`` after descriptor ``k``. Bodies
    are deterministic pseudo-random words (from ``seed``), or the byte ``fill``, so different
    models get different bytes; the chain fields are exact.

    Args:
        count: Number of descriptors (ignored when ``sizes`` is given).
        td_size: Size of every descriptor.
        align: Alignment of every descriptor after the first.
        network_id: Network id written into word 0.
        seed: Seed of the pseudo-random bodies.
        sizes: One size per descriptor, for chains whose descriptors differ.
        fill: Fill byte for the bodies instead of pseudo-random words.
    """
    sizes = [td_size] * count if sizes is None else list(sizes)
    if not sizes:
        raise InvalidArgumentError(f"a chain needs at least one descriptor (got {count})")
    for size in sizes:
        if size % 4 or size < TD_MIN_SIZE:
            raise InvalidArgumentError(
                f"descriptor sizes must be multiples of 4, at least 32 (got {size})"
            )
    offsets = [0]
    for size in sizes[:-1]:
        offsets.append(-(-(offsets[-1] + size) // align) * align)
    out = bytearray(offsets[-1] + sizes[-1])
    for index, (offset, size) in enumerate(zip(offsets, sizes, strict=True)):
        body = bytes([fill]) * size if fill is not None else _noise(size, seed * 65537 + index)
        out[offset : offset + size] = body
        last = index == len(sizes) - 1
        word0 = index & 0xFFFF | (network_id & 0xFF) << 16 | (TD_WORD0_EON if last else 0)
        word1 = 0 if last else (sizes[index + 1] // 4 - 1) << TD_NEXT_SIZE_SHIFT
        next_offset = 0 if last else offsets[index + 1]
        struct.pack_into("<II", out, offset, word0, word1)
        struct.pack_into("<I", out, offset + 4 * TD_NEXT_OFFSET_WORD, next_offset)
    return bytes(out)


def is_synthetic(toolchain: str | None) -> bool:
    """Whether a container's ``ane.toolchain`` says it holds synthetic, not real, ANE code."""
    return bool(toolchain) and SYNTHETIC_MARK in (toolchain or "")


def make_weights(size: int, *, seed: int = 0) -> bytes:
    """Deterministic pseudo-random weight bytes."""
    return _noise(size, seed + 0x5EED)


def _noise(size: int, seed: int) -> bytes:
    import numpy as np  # only when generating; keeps the build tool's start-up light

    return np.random.default_rng(seed & (2**64 - 1)).bytes(size)
