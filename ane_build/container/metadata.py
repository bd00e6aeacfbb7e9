"""Read a container's ``ane.*`` metadata (without decoding payloads) and its payloads.

Cost is O(number of top-level fields + small values): the graph is skipped by its length prefix.
This module must not parse the graph, read external data or touch devices.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import BinaryIO

from ..driver.kernel_onnx.b64 import Base64Decoder
from ..errors import (
    Base64Error,
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
    iter_range,
    open_model,
    read_text,
    scan_container,
)
from .types import AneModelMetadata, AnePayloads
from .values import parse_decimal, parse_digest, parse_io, parse_tiles

_B64_PROBE = 1024
# What the kernel's base64 loop skips.
_WHITESPACE = b" \t\n\r"


def _data_chars(text: bytes) -> int:
    """Base64 data characters the kernel decodes in ``text``: those before the first ``=``."""
    return len(text.split(b"=", 1)[0].translate(None, _WHITESPACE))


def _irregular(text: bytes) -> bool:
    """Whether ``text`` holds whitespace or an ``=``: then only counting finds the length."""
    return len(text.translate(None, _WHITESPACE + b"=")) != len(text)


def _b64_decoded_length(stream: BinaryIO, entry: Entry) -> int:
    """Decoded length of a base64 value, from its length and a look at both ends.

    The kernel decodes the characters before the first ``=`` and drops leftover bits. The exact
    count needs every character when the text has whitespace or an early ``=`` in it; a look at
    its head and tail finds the line-wrapped encodings, and only those are counted in full.
    Whitespace only in the middle of a long value is missed (the length comes out too large);
    `verify_container` decodes everything and states the true length.
    """
    start, length = entry.value_offset, entry.value_length
    if length <= 2 * _B64_PROBE:
        chars = _data_chars(pw.read_range(stream, start, length))
    else:
        head = pw.read_range(stream, start, _B64_PROBE)
        tail = pw.read_range(stream, start + length - _B64_PROBE, _B64_PROBE)
        if _irregular(head) or _irregular(tail.rstrip(b"=")):
            chars = sum(_data_chars(chunk) for chunk in iter_range(stream, start, length))
        else:
            chars = length - (len(tail) - len(tail.rstrip(b"=")))
    return chars * 6 // 8


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
        p.name: _b64_decoded_length(stream, ane[p.b64]) if p.b64 in ane else 0 for p in PAYLOADS
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


def iter_decoded(stream: BinaryIO, label: str, entry: Entry) -> Iterator[bytes]:
    """Decode an entry's base64 value in chunks, with the kernel's own rules.

    Raises:
        MetadataError: The value is not base64 as the kernel reads it (names the key, the
            offset in the file and the byte).
    """
    decoder = Base64Decoder(entry.value_offset, f"{label}: {entry.key}")
    try:
        for raw in iter_range(stream, entry.value_offset, entry.value_length):
            chunk = decoder.feed(raw)
            if chunk:
                yield chunk
            if decoder.ended:
                break
        tail = decoder.finish()
    except Base64Error as exc:
        raise MetadataError(f"{label}: {entry.key} is not valid base64: {exc}") from exc
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


def payload_chunks(model: ModelSource, name: str) -> Iterator[bytes]:
    """Decode one payload (``"microcode"``, ``"weights"`` or ``"tile_descriptors"``) in chunks.

    Nothing is held beyond one chunk, so a multi-GB payload can go straight into a BO. Yields
    nothing for an absent optional payload.

    Raises:
        ModelFileError: The file cannot be opened or read.
        WireFormatError: The protobuf is truncated or malformed.
        MetadataError: The payload is not valid base64 (names the key), or a key is duplicated.
    """
    keys = next(p for p in PAYLOADS if p.name == name)
    with open_model(model) as (stream, label):
        ane = checked_ane_entries(scan_container(stream, label), ())
        if keys.b64 in ane:
            yield from iter_decoded(stream, label, ane[keys.b64])
