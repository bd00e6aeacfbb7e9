"""Protobuf wire-format scanning and encoding for the top level of an ONNX ModelProto.

Reads tags and length prefixes only: length-delimited payloads (the graph above all) are skipped by
seeking, never read, so scanning costs O(number of top-level fields) whatever the file size. This
module must not import onnx and must not read external data.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from .._typing import BytesLike
from ..errors import InvalidArgumentError, WireFormatError

WIRE_VARINT = 0
WIRE_FIXED64 = 1
WIRE_LEN = 2
WIRE_FIXED32 = 5

MODEL_IR_VERSION = 1
MODEL_GRAPH = 7
MODEL_METADATA_PROPS = 14
ENTRY_KEY = 1
ENTRY_VALUE = 2

MAX_VARINT_BYTES = 10
# Bytes read at a time by the stream scanner: the small fields around a large one in one read.
SCAN_BLOCK = 8192


@dataclass(frozen=True)
class WireField:
    """One field found by the scanner.

    Attributes:
        number: The field number.
        wire_type: The wire type (0, 1, 2 or 5).
        offset: Byte offset of the field's tag.
        value_offset: Byte offset of the value (after the tag and, for LEN, the length prefix).
        length: Size in bytes of the value as stored.
        varint: The decoded value for varint fields, else None.
    """

    number: int
    wire_type: int
    offset: int
    value_offset: int
    length: int
    varint: int | None = None

    @property
    def end(self) -> int:
        """Offset one past the field's last byte."""
        return self.value_offset + self.length


def encode_varint(value: int) -> bytes:
    """Encode a non-negative integer as a protobuf varint."""
    if value < 0:
        raise InvalidArgumentError(f"varint must be non-negative, got {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_len_header(number: int, length: int) -> bytes:
    """Return the tag and length prefix of a length-delimited field."""
    return encode_varint(number << 3 | WIRE_LEN) + encode_varint(length)


def encode_entry_head(key: bytes, value_length: int) -> bytes:
    """A StringStringEntryProto body up to its value: the key field and the value's header.

    The entry is ``head + value``; writers stream a large value after the head.
    """
    key_field = encode_len_header(ENTRY_KEY, len(key)) + key
    return key_field + encode_len_header(ENTRY_VALUE, value_length)


def decode_varint(data: BytesLike, pos: int, end: int, what: str = "varint") -> tuple[int, int]:
    """Decode a varint at ``pos``; return the value and the position after it.

    Raises:
        WireFormatError: The varint runs past ``end`` or is longer than 10 bytes.
    """
    return _decode_varint(data, pos, end, what, 0)


def _decode_varint(data: BytesLike, pos: int, end: int, what: str, base: int) -> tuple[int, int]:
    """`decode_varint` with file offsets in messages; ``base`` is the offset of ``data[0]``."""
    result = 0
    shift = 0
    start = pos
    while True:
        if pos >= end:
            raise WireFormatError(f"truncated {what} at byte {base + start}")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if pos - start >= MAX_VARINT_BYTES:
            raise WireFormatError(
                f"{what} at byte {base + start} is longer than {MAX_VARINT_BYTES} bytes"
            )


def _field_at(data: BytesLike, pos: int, end: int, base: int) -> WireField:
    """Decode the field whose tag is at ``pos``; ``base`` is the file offset of ``data[0]``."""
    tag, cur = _decode_varint(data, pos, end, "field tag", base)
    number, wire_type = tag >> 3, tag & 7
    if number == 0:
        raise WireFormatError(f"invalid field number 0 at byte {base + pos}")
    varint: int | None = None
    if wire_type == WIRE_VARINT:
        varint, after = _decode_varint(data, cur, end, f"field {number} value", base)
        length = after - cur
    elif wire_type == WIRE_LEN:
        length, after = _decode_varint(data, cur, end, f"field {number} length", base)
        cur = after
    elif wire_type == WIRE_FIXED64:
        length = 8
    elif wire_type == WIRE_FIXED32:
        length = 4
    else:
        raise WireFormatError(
            f"unsupported wire type {wire_type} for field {number} at byte {base + pos}"
        )
    return WireField(number, wire_type, base + pos, base + cur, length, varint)


def _check_fits(field: WireField, end: int) -> None:
    if field.end > end:
        raise WireFormatError(
            f"field {field.number} at byte {field.offset} declares {field.length} bytes but "
            f"only {end - field.value_offset} remain"
        )


def iter_fields(data: BytesLike, start: int = 0, end: int | None = None) -> Iterator[WireField]:
    """Yield the fields of the message stored in ``data[start:end]``.

    Raises:
        WireFormatError: A tag, varint or length runs past the end of the message.
    """
    end = len(data) if end is None else end
    pos = start
    while pos < end:
        field = _field_at(data, pos, end, 0)
        _check_fits(field, end)
        yield field
        pos = field.end


def iter_file_fields(stream: BinaryIO, size: int | None = None) -> Iterator[WireField]:
    """Yield the top-level fields of the message in a seekable binary stream.

    Each field costs one small read of its header; values are skipped by seeking.

    Raises:
        WireFormatError: A tag, varint or length runs past the end of the stream.
    """
    if size is None:
        size = stream.seek(0, io.SEEK_END)
    return iter_stream_fields(stream, 0, size)


def iter_stream_fields(
    stream: BinaryIO, start: int, end: int, block: int = SCAN_BLOCK
) -> Iterator[WireField]:
    """Yield the fields of the message stored in bytes ``start`` to ``end`` of a seekable stream.

    Used for top-level fields and for nested messages (a metadata entry) alike; offsets in the
    fields and in error messages are offsets in the stream. Reads ``block`` bytes at a time, so a
    run of small fields costs one read and a large value costs one seek.

    Raises:
        WireFormatError: A tag, varint or length runs past ``end``.
    """
    pos = start
    header_len = 2 * MAX_VARINT_BYTES
    buf = b""
    buf_start = start
    while pos < end:
        rel = pos - buf_start
        if rel + header_len > len(buf) and buf_start + len(buf) < end:
            stream.seek(pos)
            buf = stream.read(min(max(block, header_len), end - pos))
            buf_start, rel = pos, 0
        field = _field_at(buf, rel, len(buf), buf_start)
        _check_fits(field, end)
        yield field
        pos = field.end


def read_range(stream: BinaryIO, offset: int, length: int) -> bytes:
    """Read exactly ``length`` bytes at ``offset`` of ``stream``.

    Raises:
        WireFormatError: The stream ends early.
    """
    stream.seek(offset)
    data = stream.read(length)
    if len(data) != length:
        raise WireFormatError(f"expected {length} bytes at byte {offset}, got {len(data)}")
    return data


def file_size(stream: BinaryIO) -> int:
    """Size of a seekable stream (its file's size for real files)."""
    try:
        return os.fstat(stream.fileno()).st_size
    except (AttributeError, OSError, io.UnsupportedOperation):
        return stream.seek(0, io.SEEK_END)
