"""Interim model of the fork kernel's ONNX-flag translation (replaced by `driver.kernel_onnx`).

Scans the slot-0 BO for metadata entries, decodes the payloads and the descriptor numbers, and
rewrites the BO in place. Pure over bytes; no devices.
"""

from __future__ import annotations

import binascii
import errno

from ..uapi import ANE_CMD_GRAN, ONNX_KEY_LIMIT, ONNX_NUMBER_LIMIT, round_up

_WIRE_VARINT, _WIRE_FIXED64, _WIRE_LEN, _WIRE_FIXED32 = 0, 1, 2, 5
_METADATA_PROPS, _ENTRY_KEY, _ENTRY_VALUE = 14, 1, 2
_URLSAFE_TO_STD = bytes.maketrans(b"-_", b"+/")


class RejectionError(Exception):
    """The kernel refuses the container; carries the errno."""

    def __init__(self, err: int, why: str) -> None:
        super().__init__(why)
        self.errno = err


def _varint(data: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    for n in range(10):
        if pos + n >= end:
            raise RejectionError(errno.EINVAL, f"truncated varint at byte {pos}")
        byte = data[pos + n]
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos + n + 1
        shift += 7
    raise RejectionError(errno.EINVAL, f"varint at byte {pos} is longer than 10 bytes")


def scan(data: memoryview) -> tuple[dict[bytes, bytes], int]:
    """Metadata entries and where the container ends (the first zero tag byte)."""
    entries: dict[bytes, bytes] = {}
    end = len(data)
    pos = 0
    while pos < end and data[pos] != 0:
        tag, pos = _varint(data, pos, end)
        number, wire = tag >> 3, tag & 7
        if wire == _WIRE_VARINT:
            _, pos = _varint(data, pos, end)
            continue
        if wire in (_WIRE_FIXED64, _WIRE_FIXED32):
            pos += 8 if wire == _WIRE_FIXED64 else 4
            continue
        if wire != _WIRE_LEN:
            raise RejectionError(errno.EINVAL, f"wire type {wire} at byte {pos}")
        length, pos = _varint(data, pos, end)
        if pos + length > end:
            raise RejectionError(errno.EINVAL, f"field {number} runs past the BO")
        if number == _METADATA_PROPS:
            key, value = _entry(data, pos, pos + length)
            if len(key) >= ONNX_KEY_LIMIT:
                raise RejectionError(errno.EINVAL, f"metadata key of {len(key)} bytes (limit 63)")
            entries[key] = value
        pos += length
    return entries, pos


def _entry(data: memoryview, pos: int, end: int) -> tuple[bytes, bytes]:
    key = value = b""
    while pos < end:
        tag, pos = _varint(data, pos, end)
        if tag & 7 != _WIRE_LEN:
            raise RejectionError(errno.EINVAL, "metadata entry field is not length-delimited")
        length, pos = _varint(data, pos, end)
        if pos + length > end:
            raise RejectionError(errno.EINVAL, "metadata entry runs past its end")
        if tag >> 3 == _ENTRY_KEY:
            key = bytes(data[pos : pos + length])
        elif tag >> 3 == _ENTRY_VALUE:
            value = bytes(data[pos : pos + length])
        pos += length
    return key, value


def _decode_b64(value: bytes | None, key: str) -> bytes:
    if value is None:
        return b""
    text = b"".join(value.split()).translate(_URLSAFE_TO_STD)
    if len(text) % 4:
        text += b"=" * (-len(text) % 4)
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except binascii.Error as exc:
        raise RejectionError(errno.EINVAL, f"{key}: invalid base64 ({exc})") from exc


def _decimal(value: bytes | None, key: str) -> int:
    if not value or len(value) >= ONNX_NUMBER_LIMIT or not value.isdigit():
        raise RejectionError(errno.EINVAL, f"{key}: missing or not a decimal string below 32 chars")
    number = int(value)
    if not 0 < number < 1 << 32:
        raise RejectionError(errno.EINVAL, f"{key}: {number} out of range")
    return number


def translate(bo: memoryview) -> tuple[tuple[int, int, int], bytes, dict[bytes, bytes]]:
    """Rewrite the BO in place; return (tsk_size, td_size, td_count), the container, entries.

    Raises:
        RejectionError: The kernel's errno and why.
    """
    entries, end = scan(bo)
    container = bytes(bo[:end])
    microcode = _decode_b64(entries.get(b"ane.microcode.b64"), "ane.microcode.b64")
    weights = _decode_b64(entries.get(b"ane.weights.b64", b""), "ane.weights.b64")
    td_size = _decimal(entries.get(b"ane.td_size"), "ane.td_size")
    td_count = _decimal(entries.get(b"ane.td_count"), "ane.td_count")
    if not microcode:
        raise RejectionError(errno.EINVAL, "ane.microcode.b64 missing or empty")
    weights_at = round_up(len(microcode), ANE_CMD_GRAN)
    if weights_at + len(weights) > len(bo):
        raise RejectionError(
            errno.EINVAL, f"microcode+weights ({weights_at + len(weights)}) exceed the BO"
        )
    image = microcode + bytes(weights_at - len(microcode)) + weights
    bo[: len(image)] = image
    return (len(microcode), td_size, td_count), container, entries
