"""Test helpers: synthetic descriptor chains and .anec files that follow DESIGN.md section 5."""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from pathlib import Path

from ane_build.anec import ANEC_HEADER_SIZE, ANEC_PAYLOAD_OFFSET, TILE_UNIT, AnecHeader

EON = 1 << 25
M1_TD_SIZE = 0x274


def round_up(value: int, align: int) -> int:
    return -(-value // align) * align


def make_chain(
    sizes: Sequence[int] = (M1_TD_SIZE,),
    *,
    align: int = 0x100,
    fill: int = 0x5A,
    trailing: bytes = b"",
) -> bytes:
    """A valid chain: descriptor k is ``sizes[k]`` bytes at a multiple of ``align``.

    Word 0 holds the task id (and the end-of-network bit on the last), word 1 bits 24:16 the next
    descriptor's size in words minus one, word 7 the next descriptor's byte offset. Other words
    are filled with non-zero bytes so a wrong td_size shows up as data after the chain.
    """
    offsets = [0]
    for size in sizes[:-1]:
        offsets.append(round_up(offsets[-1] + size, align))
    out = bytearray(offsets[-1] + sizes[-1])
    for k, (offset, size) in enumerate(zip(offsets, sizes, strict=True)):
        out[offset : offset + size] = bytes([fill]) * size
        last = k == len(sizes) - 1
        word0 = k | (EON if last else 0)
        word1 = 0 if last else ((sizes[k + 1] // 4 - 1) << 16)
        word7 = 0 if last else offsets[k + 1]
        struct.pack_into("<II", out, offset, word0, word1)
        struct.pack_into("<I", out, offset + 28, word7)
    return bytes(out) + trailing


def make_anec_bytes(
    microcode: bytes,
    weights: bytes = b"",
    *,
    td_size: int | None = None,
    td_count: int | None = None,
    src_count: int = 1,
    dst_count: int = 1,
    tiles: Mapping[int, int] | None = None,
    nchw: Mapping[int, tuple[int, int, int, int, int, int]] | None = None,
    payload_offset: int = ANEC_PAYLOAD_OFFSET,
    **overrides: int,
) -> bytes:
    """An .anec image; slots default to one (1,1,1,77) tensor per output and input."""
    pad = round_up(len(microcode), 16) - len(microcode)
    payload = microcode + bytes(pad) + weights
    if nchw is None:
        nchw = {4 + k: (1, 1, 1, 77, 192, 192) for k in range(src_count + dst_count)}
    if tiles is None:
        tiles = {0: round_up(len(payload) + 1, TILE_UNIT) // TILE_UNIT}
        tiles.update(dict.fromkeys(nchw, 1))
    fields = {
        "size": len(payload),
        "td_size": M1_TD_SIZE if td_size is None else td_size,
        "td_count": 1 if td_count is None else td_count,
        "tsk_size": len(microcode),
        "krn_size": len(weights),
        "src_count": src_count,
        "dst_count": dst_count,
    }
    fields.update(overrides)
    header = AnecHeader(
        **fields,
        tiles=tuple(tiles.get(i, 0) for i in range(32)),
        nchw=tuple(nchw.get(i, (0,) * 6) for i in range(32)),
    ).pack()
    return header + bytes(payload_offset - ANEC_HEADER_SIZE) + payload


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
