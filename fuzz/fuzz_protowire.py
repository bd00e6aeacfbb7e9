"""Fuzz the protobuf wire scanner: in memory, streamed, and streamed in small blocks.

Run: ``python fuzz/fuzz_protowire.py -max_total_time=600 corpus/protowire/``
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator

import _fuzz_common as common

with common.instrumented(__name__ == "__main__"):
    from ane_build.errors import WireFormatError
    from ane_build.formats import protowire as pw


def _scan(data: bytes, block: int) -> list[pw.WireField]:
    scans: list[Callable[[], Iterator[pw.WireField]]] = [
        lambda: pw.iter_fields(data),
        lambda: pw.iter_file_fields(io.BytesIO(data)),
        lambda: pw.iter_stream_fields(io.BytesIO(data), 0, len(data), block=block),
    ]
    outcomes: list[list[pw.WireField] | str] = []
    for scan in scans:
        try:
            outcomes.append(list(scan()))
        except WireFormatError:
            outcomes.append("error")
    if not outcomes[0] == outcomes[1] == outcomes[2]:
        raise AssertionError(f"scanners disagree: {outcomes}")
    if outcomes[0] == "error":
        raise WireFormatError("rejected")
    fields = outcomes[0]
    assert isinstance(fields, list)
    return fields


def TestOneInput(data: bytes) -> None:
    """Scan ``data[1:]`` three ways (``data[0]`` picks the stream block size)."""
    source = common.Input(data)
    block = 1 + source.byte() % 64
    message = source.rest()
    fields = common.guarded(lambda: _scan(message, block), len(message))
    if isinstance(fields, list):
        if sum(f.end - f.offset for f in fields) != len(message):
            raise AssertionError("accepted fields do not cover the message")
    elif not isinstance(fields, WireFormatError):
        raise AssertionError(f"unexpected error type {type(fields).__name__}: {fields}")


def seeds() -> list[bytes]:
    """A few well-formed messages: every wire type, nested entries, a large length."""
    entry = pw.encode_entry_head(b"ane.td_size", 3) + b"628"
    message = (
        pw.encode_varint(1 << 3) + pw.encode_varint(8)
        + pw.encode_len_header(7, 3) + b"abc"
        + bytes([2 << 3 | pw.WIRE_FIXED64]) + bytes(8)
        + bytes([3 << 3 | pw.WIRE_FIXED32]) + bytes(4)
        + pw.encode_len_header(14, len(entry)) + entry
    )  # fmt: skip
    return [b"\x07" + message, b"\x00" + message[:5], b"\x10" + pw.encode_len_header(7, 2**31)]


def main() -> None:
    """Fuzz with atheris (libFuzzer flags and corpus folders come from the command line)."""
    common.run(TestOneInput, seeds())


if __name__ == "__main__":
    main()
