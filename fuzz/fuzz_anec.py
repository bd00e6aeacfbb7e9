"""Fuzz the ``.anec`` reader on whole files: header, payload offset, descriptor chain, slots.

Run: ``python fuzz/fuzz_anec.py -max_total_time=600 corpus/anec/`` (seeds include the real
samples in ../shared/anec-samples when that folder exists; they are read, never copied here).
"""

from __future__ import annotations

import _fuzz_common as common

with common.instrumented(__name__ == "__main__"):
    from ane_build.driver.uapi import PAGE_SIZE
    from ane_build.formats.anec import (
        ANEC_HEADER_SIZE,
        ANEC_LEGACY_PAYLOAD_OFFSET,
        ANEC_PAYLOAD_OFFSET,
        AnecFile,
        AnecHeader,
        read_anec,
    )
    from ane_build.synthetic.chains import M1_TD_SIZE, make_chain

OFFSETS = (ANEC_PAYLOAD_OFFSET, ANEC_LEGACY_PAYLOAD_OFFSET)


def TestOneInput(data: bytes) -> None:
    """``data[0]`` bit 0 picks the payload offset to read at; the rest is the file."""
    source = common.Input(data)
    offset = OFFSETS[source.byte() & 1]
    image = source.rest()
    path = common.scratch_file("model.anec", image)
    got = common.guarded(lambda: read_anec(path, payload_offset=offset), len(image))
    if isinstance(got, AnecFile):
        h = got.header
        if h.size != len(image) - offset or got.chain.tsk_size != h.tsk_size:
            raise AssertionError(f"accepted an inconsistent header: {h}")
        if got.chain.td_count != h.td_count or got.chain.td_size != h.td_size:
            raise AssertionError("accepted a chain that disagrees with the header")
        if got.microcode.read() != image[offset : offset + h.tsk_size]:
            raise AssertionError("microcode range is not the payload start")


def _anec(count: int, weights: bytes, offset: int) -> bytes:
    chain = make_chain(count)
    payload = chain + bytes(-len(chain) % 16) + weights
    tiles = [0] * 32
    nchw = [(0, 0, 0, 0, 0, 0)] * 32
    tiles[0] = -(-(len(payload) + 1) // PAGE_SIZE)
    for slot in (4, 5):
        tiles[slot] = 1
        nchw[slot] = (1, 1, 1, 77, 192, 192)
    header = AnecHeader(
        size=len(payload),
        td_size=M1_TD_SIZE,
        td_count=count,
        tsk_size=len(chain),
        krn_size=len(weights),
        src_count=1,
        dst_count=1,
        tiles=tuple(tiles),
        nchw=tuple(nchw),
    )
    return header.pack() + bytes(offset - ANEC_HEADER_SIZE) + payload


def seeds() -> list[bytes]:
    """Synthetic files at both payload offsets, plus the real samples when present."""
    out = [b"\x00" + _anec(2, bytes(range(64)), ANEC_PAYLOAD_OFFSET)]
    out.append(b"\x01" + _anec(1, b"", ANEC_LEGACY_PAYLOAD_OFFSET))
    out += [b"\x00" + path.read_bytes() for path in common.sample_files()]
    return out


def main() -> None:
    """Fuzz with atheris (libFuzzer flags and corpus folders come from the command line)."""
    common.run(TestOneInput, seeds())


if __name__ == "__main__":
    main()
