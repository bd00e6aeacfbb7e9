"""Test helpers: synthetic descriptor chains and .anec files that follow DESIGN.md section 5."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from ane_build import synthetic
from ane_build.anec import ANEC_HEADER_SIZE, ANEC_PAYLOAD_OFFSET, TILE_UNIT, AnecHeader
from ane_build.uapi import round_up

M1_TD_SIZE = 0x274


def make_chain(
    sizes: Sequence[int] = (M1_TD_SIZE,),
    *,
    align: int = 0x100,
    fill: int = 0x5A,
    trailing: bytes = b"",
) -> bytes:
    """A valid chain of descriptors of ``sizes``; non-zero bodies so a wrong td_size shows up as
    data after the chain."""
    return synthetic.make_chain(len(sizes), sizes=sizes, align=align, fill=fill) + trailing


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
