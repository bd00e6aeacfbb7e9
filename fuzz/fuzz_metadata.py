"""Fuzz the container metadata parser, payload reader and verifier, on bytes and on files.

Run: ``python fuzz/fuzz_metadata.py -max_total_time=600 corpus/metadata/``
"""

from __future__ import annotations

import base64
from pathlib import Path

import _fuzz_common as common

with common.instrumented(__name__ == "__main__"):
    from ane_build.container.metadata import parse_ane_metadata, read_ane_payloads
    from ane_build.container.types import AneModelMetadata, AnePayloads, VerifyReport
    from ane_build.container.verify import verify_container
    from ane_build.formats import protowire as pw
    from ane_build.formats.microcode import walk_chain
    from ane_build.synthetic.chains import M1_TD_SIZE, make_chain


def TestOneInput(data: bytes) -> None:
    """``data[0]``: bit 0 reads through a file, bit 1 verifies strictly; the rest is the model."""
    source = common.Input(data)
    flags = source.byte()
    blob = source.rest()
    model: bytes | Path = common.scratch_file("model.onnx", blob) if flags & 1 else blob
    meta = common.guarded(lambda: parse_ane_metadata(model), len(blob))
    payloads = common.guarded(lambda: read_ane_payloads(model), len(blob))
    report = common.guarded(lambda: verify_container(model, strict=bool(flags & 2)), len(blob))
    if not isinstance(report, VerifyReport):
        raise AssertionError(f"verify_container raised {type(report).__name__}: {report}")
    if report.ok:
        if not isinstance(meta, AneModelMetadata) or not isinstance(payloads, AnePayloads):
            raise AssertionError(f"verified, yet unreadable: {meta!r} {payloads!r}")
        # parse may over-count a long value with whitespace only in its middle, never under.
        if meta.microcode_len < len(payloads.microcode) or not payloads.microcode:
            raise AssertionError("verified, but the parsed microcode length is wrong")
        if walk_chain(payloads.microcode, meta.td_size).td_count != meta.td_count:
            raise AssertionError("verified, but the chain disagrees with ane.td_count")


def _container(entries: dict[str, bytes]) -> bytes:
    out = pw.encode_varint(1 << 3) + pw.encode_varint(8) + pw.encode_len_header(7, 4) + b"\x0a\x00"
    out += b"\x12\x00"
    for key, value in entries.items():
        body = pw.encode_entry_head(key.encode(), len(value)) + value
        out += pw.encode_len_header(14, len(body)) + body
    return out


def seeds() -> list[bytes]:
    """Valid containers (one and three descriptors, with weights and ane.io) and variants."""
    out = []
    for count in (1, 3):
        chain = make_chain(count)
        entries = {
            "ane.microcode.b64": base64.b64encode(chain),
            "ane.td_size": str(M1_TD_SIZE).encode(),
            "ane.td_count": str(count).encode(),
            "ane.weights.b64": base64.urlsafe_b64encode(bytes(range(50))).rstrip(b"="),
            "ane.io": b'{"4": {"role": "output", "n": 1, "c": 1, "h": 1, "w": 8, '
            b'"plane_stride": 64, "row_stride": 64}}',
            "ane.tiles": b'{"4": 16384}',
            "ane.format": b"1",
        }
        blob = _container(entries)
        out += [b"\x00" + blob, b"\x03" + blob]
    return out


def main() -> None:
    """Fuzz with atheris (libFuzzer flags and corpus folders come from the command line)."""
    common.run(TestOneInput, seeds())


if __name__ == "__main__":
    main()
