"""Read a container's ``ane.*`` metadata (without decoding payloads) and its payloads.

Cost is O(number of top-level fields + small values): the graph is skipped by its length prefix.
This module must not parse the graph, read external data or touch devices.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterator, Sequence
from typing import BinaryIO

from .._typing import BytesLike
from ..errors import (
    MetadataError,
    MissingAneMetadataError,
)
from ..formats import protowire as pw
from .keys import (
    ANE_KEY_PREFIX,
    KEY_FORMAT,
    KEY_IO,
    KEY_MICROCODE,
    KEY_MICROCODE_SHA256,
    KEY_SOURCE_SHA256,
    KEY_TD_COUNT,
    KEY_TD_SIZE,
    KEY_TILE_DESCRIPTORS_SHA256,
    KEY_TILES,
    KEY_TOOLCHAIN,
    KEY_WEIGHTS_SHA256,
    MICROCODE,
    PAYLOADS,
    REQUIRED_KEYS,
    TILE_DESCRIPTORS,
    WEIGHTS,
)
from .scan import (
    Entry,
    ModelSource,
    Scan,
    bad_value,
    iter_range,
    open_model,
    read_text,
    scan_container,
)
from .types import AneModelMetadata, AnePayloads
from .values import parse_decimal, parse_digest, parse_io, parse_tiles

_B64_PROBE = 1024
_WHITESPACE = b" \t\n\r\v\f"
_URLSAFE_TO_STD = bytes.maketrans(b"-_", b"+/")
_STD_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_NOT_KERNEL_B64 = re.compile(rb"[^A-Za-z0-9+/\-_= \t\n\r\v\f]")


def _data_chars(text: bytes) -> int:
    """Number of base64 data characters in ``text`` (whitespace and padding excluded)."""
    return len(text.translate(None, _WHITESPACE + b"="))


def _has_whitespace(text: bytes) -> bool:
    return len(text.translate(None, _WHITESPACE)) != len(text)


def _b64_decoded_length(stream: BinaryIO, label: str, entry: Entry) -> int:
    """Decoded length of a base64 value from its length, its padding and a look at both ends.

    The exact count needs every character when the text has whitespace in it; a look at its head
    and tail finds the line-wrapped encodings, and only those are counted in full. Whitespace
    only in the middle of a long value is missed (the length comes out too large), except when
    the estimate is impossible for base64 (one more than a multiple of 4): that is counted in full.
    """
    start, length = entry.value_offset, entry.value_length
    if length <= 2 * _B64_PROBE:
        chars = _data_chars(pw.read_range(stream, start, length))
    else:
        head = pw.read_range(stream, start, _B64_PROBE)
        tail = pw.read_range(stream, start + length - _B64_PROBE, _B64_PROBE)
        if _has_whitespace(head) or _has_whitespace(tail):
            chars = sum(_data_chars(chunk) for chunk in iter_range(stream, start, length))
        else:
            chars = length - (len(tail) - len(tail.rstrip(b"=")))
            if chars % 4 == 1:
                # No whitespace-free base64 has this length: there is whitespace in the middle.
                chars = sum(_data_chars(chunk) for chunk in iter_range(stream, start, length))
    if chars % 4 == 1:
        raise bad_value(
            label,
            entry.key,
            None,
            f"not valid base64: {chars} data characters is one more than a multiple of 4",
        )
    return chars * 3 // 4


def missing_message(label: str, missing: Sequence[str]) -> str:
    """The error text for a model that lacks required ``ane.*`` keys, with how to add them."""
    model = label if label != "<bytes>" else "MODEL"
    return (
        f"{label}: not an ANE container: missing {', '.join(missing)}. Add the compiled payload "
        f"with `convert-to-ane {model} --anec FILE` (an .anec/.ane file from the compiler) or "
        f"`convert-to-ane {model} --artifact-root DIR` (a folder of compiler artefacts)"
    )


def checked_ane_entries(scan: Scan, required: Sequence[str]) -> dict[str, Entry]:
    """The ``ane.*`` entries by key, after checking required keys exist and none repeats."""
    ane = scan.ane_entries()
    missing = [key for key in required if key not in ane]
    if missing:
        raise MissingAneMetadataError(missing_message(scan.label, missing))
    dups = [key for key in scan.duplicate_keys() if key.startswith(ANE_KEY_PREFIX)]
    if dups:
        raise MetadataError(
            f"{scan.label}: metadata key {dups[0]!r} appears more than once; rebuild the "
            "container so each ane.* key is written once"
        )
    return ane


def metadata_from_scan(scan: Scan, stream: BinaryIO) -> AneModelMetadata:
    """Parse the metadata of a scanned container (small values read, payloads not decoded)."""
    label = scan.label
    ane = checked_ane_entries(scan, REQUIRED_KEYS)

    def text(key: str) -> str | None:
        return read_text(stream, label, ane[key]) if key in ane else None

    def digest(key: str) -> str | None:
        value = text(key)
        return None if value is None else parse_digest(value, key, label)

    lengths = {
        p.name: _b64_decoded_length(stream, label, ane[p.b64]) if p.b64 in ane else 0
        for p in PAYLOADS
    }
    io_text, tiles_text = text(KEY_IO), text(KEY_TILES)
    return AneModelMetadata(
        path=label,
        file_size=scan.size,
        has_graph=scan.has_graph,
        microcode_len=lengths[MICROCODE.name],
        weights_len=lengths[WEIGHTS.name],
        tile_descriptors_len=lengths[TILE_DESCRIPTORS.name],
        td_size=parse_decimal(read_text(stream, label, ane[KEY_TD_SIZE]), KEY_TD_SIZE, label),
        td_count=parse_decimal(read_text(stream, label, ane[KEY_TD_COUNT]), KEY_TD_COUNT, label),
        format=text(KEY_FORMAT),
        toolchain=text(KEY_TOOLCHAIN),
        io={} if io_text is None else parse_io(io_text, label),
        tiles={} if tiles_text is None else parse_tiles(tiles_text, label),
        microcode_sha256=digest(KEY_MICROCODE_SHA256),
        weights_sha256=digest(KEY_WEIGHTS_SHA256),
        tile_descriptors_sha256=digest(KEY_TILE_DESCRIPTORS_SHA256),
        source_sha256=digest(KEY_SOURCE_SHA256),
        keys=tuple(e.key for e in scan.entries),
        foreign_keys=tuple(e.key for e in scan.entries if not e.key.startswith(ANE_KEY_PREFIX)),
    )


def parse_ane_metadata(model: ModelSource) -> AneModelMetadata:
    """Read a container's ``ane.*`` metadata without reading its graph or its payloads.

    Cost is O(number of top-level fields + size of the small values): the graph is skipped by its
    length prefix, and payload lengths come from a look at both ends of their base64 text. Works on
    files of any size; external data is never opened.

    Args:
        model: Path of an ONNX file, its bytes, or a seekable binary stream of it.

    Returns:
        The metadata. A model without a graph parses (`verify_container` flags it).

    Raises:
        ModelFileError: The file cannot be opened or read.
        WireFormatError: The protobuf is truncated or malformed (names the byte offset).
        MissingAneMetadataError: ``ane.microcode.b64``, ``ane.td_size`` or ``ane.td_count`` is
            missing.
        MetadataError: A value is invalid (names the key and the value).
    """
    with open_model(model) as (stream, label):
        return metadata_from_scan(scan_container(stream, label), stream)


class _KernelBase64Decoder:
    """Incremental base64 decoder with the fork kernel's rules.

    Both alphabets (standard and URL-safe, even mixed), ASCII whitespace skipped anywhere, ``=``
    padding optional but, when present, exactly what completes the last group and only at the end;
    a dangling single character is invalid.
    """

    def __init__(self, label: str, key: str) -> None:
        self._label = label
        self._key = key
        self._carry = b""
        self._pad = 0
        self._offset = 0

    def _fail(self, reason: str) -> MetadataError:
        return MetadataError(f"{self._label}: {self._key} is not valid base64: {reason}")

    def _invalid(self, raw: bytes, start: int, reason: str) -> MetadataError:
        # A byte outside both alphabets explains any failure best, so it is named first.
        bad = _NOT_KERNEL_B64.search(raw)
        if bad:
            reason = f"invalid byte {bad.group()!r} at value byte {start + bad.start()}"
        return self._fail(reason)

    def feed(self, raw: bytes) -> bytes:
        """Decode what ``raw`` completes; keep the rest for the next call."""
        start = self._offset
        self._offset += len(raw)
        text = raw.translate(_URLSAFE_TO_STD, _WHITESPACE)
        if not text:
            return b""
        eq = text.find(b"=")
        if self._pad or eq >= 0:
            data, pads = (text[:eq], text[eq:]) if eq >= 0 else (text, b"")
            if (self._pad and data) or pads.strip(b"="):
                raise self._invalid(
                    raw, start, f"data after '=' padding (in value bytes {start}..{self._offset})"
                )
            self._pad += len(pads)
            text = data
        block = self._carry + text if self._carry else text
        cut = len(block) - len(block) % 4
        self._carry = block[cut:]
        try:
            decoded: bytes | None = binascii.a2b_base64(block[:cut], strict_mode=True)
        except binascii.Error:
            decoded = None
        if decoded is None or self._carry.translate(None, _STD_ALPHABET):
            raise self._invalid(raw, start, "invalid data")
        return decoded

    def finish(self) -> bytes:
        """Decode the final partial group and check the padding."""
        rest = len(self._carry)
        if rest == 1:
            raise self._fail("a single character dangles after the last complete group")
        if self._pad and (rest == 0 or self._pad != 4 - rest):
            raise self._fail(f"{self._pad} '=' do not complete the last group")
        if not rest:
            return b""
        try:
            return binascii.a2b_base64(self._carry + b"=" * (4 - rest), strict_mode=True)
        except binascii.Error:
            raise self._fail(f"invalid data {self._carry!r} at the end") from None


def decode_kernel_base64(data: BytesLike, *, key: str = "value", label: str = "<bytes>") -> bytes:
    """Decode base64 exactly as the fork kernel does (see `_KernelBase64Decoder` for the rules).

    Raises:
        MetadataError: The text is not valid base64 under those rules (names ``key``).
    """
    decoder = _KernelBase64Decoder(label, key)
    return decoder.feed(bytes(data)) + decoder.finish()


def iter_decoded(stream: BinaryIO, label: str, entry: Entry) -> Iterator[bytes]:
    """Decode an entry's base64 value in chunks, as the kernel reads it."""
    decoder = _KernelBase64Decoder(label, entry.key)
    for raw in iter_range(stream, entry.value_offset, entry.value_length):
        chunk = decoder.feed(raw)
        if chunk:
            yield chunk
    tail = decoder.finish()
    if tail:
        yield tail


def read_ane_payloads(model: ModelSource) -> AnePayloads:
    """Decode the microcode, weights and tile descriptors of a container.

    The payloads are held in memory; use `verify_container` to check a large container in
    constant memory.

    Raises:
        ModelFileError: The file cannot be opened or read.
        WireFormatError: The protobuf is truncated or malformed.
        MissingAneMetadataError: There is no ``ane.microcode.b64``.
        MetadataError: A payload is not valid base64 (names the key), or a key is duplicated.
    """
    with open_model(model) as (stream, label):
        ane = checked_ane_entries(scan_container(stream, label), (KEY_MICROCODE,))
        values = {
            p.name: b"".join(iter_decoded(stream, label, ane[p.b64])) if p.b64 in ane else b""
            for p in PAYLOADS
        }
    return AnePayloads(
        microcode=values[MICROCODE.name],
        weights=values[WEIGHTS.name],
        tile_descriptors=values[TILE_DESCRIPTORS.name],
    )
