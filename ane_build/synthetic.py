"""Synthetic compiler output: structurally valid descriptor chains and weights, deterministic.

For tests, benchmarks and the example project only. The bytes follow the descriptor format
(DESIGN section 5) so every check we and the simulator apply passes, but they are NOT real ANE
code and must never be presented as such or sent to hardware as a meaningful program.
"""

from __future__ import annotations

import struct

from .microcode import TD_NEXT_OFFSET_WORD, TD_NEXT_SIZE_SHIFT, TD_WORD0_EON

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
) -> bytes:
    """Return microcode holding ``count`` descriptors of ``td_size`` bytes each.

    Descriptor bodies are filled with deterministic pseudo-random words (from ``seed``) so
    different models get different bytes; the chain fields are exact.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1 (got {count})")
    if td_size % 4 or td_size < 4 * (TD_NEXT_OFFSET_WORD + 1):
        raise ValueError(f"td_size must be a multiple of 4 and at least 32 (got {td_size})")
    stride = (td_size + align - 1) // align * align
    out = bytearray(stride * (count - 1) + td_size)
    for index in range(count):
        offset = index * stride
        body = _noise(td_size, seed * 65537 + index)
        out[offset : offset + td_size] = body
        last = index == count - 1
        word0 = index & 0xFFFF | (network_id & 0xFF) << 16 | (TD_WORD0_EON if last else 0)
        word1 = 0 if last else (td_size // 4 - 1) << TD_NEXT_SIZE_SHIFT
        next_offset = 0 if last else offset + stride
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
