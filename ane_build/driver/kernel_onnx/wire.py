"""Rules 1-4, 6 and 10-15: the scan of the whole BO, its entries and their decimals."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from errno import ERANGE

from ...errors import InvalidArgumentError, KernelRejection
from ..uapi import ONNX_KEY_LIMIT, ONNX_NUMBER_LIMIT, PAGE_SIZE, round_up
from .b64 import CHUNK
from .verdict import Buffer, refuse

MICROCODE_KEY = b"ane.microcode.b64"
WEIGHTS_KEY = b"ane.weights.b64"
TD_SIZE_KEY = b"ane.td_size"
TD_COUNT_KEY = b"ane.td_count"

_METADATA_FIELD = 14  # ModelProto.metadata_props
_KEY_FIELD = 1  # StringStringEntryProto.key
_VALUE_FIELD = 2  # StringStringEntryProto.value
_WIRE_VARINT = 0
_WIRE_LEN = 2
_FIXED_SIZES = {1: 8, 5: 4}
_VARINT_LIMIT = 10
_U32 = 0xFFFF_FFFF
_U64 = 0xFFFF_FFFF_FFFF_FFFF


class BoImage:
    """The BO as the parser reads it: ``view`` (the bytes held), then zeros up to ``size``.

    The zeros are never materialised: a run of them is measured, not read.
    """

    def __init__(self, view: memoryview, size: int) -> None:
        self.view = view
        self.held = len(view)
        self.size = size

    @classmethod
    def holding(cls, data: Buffer, bo_size: int | None) -> BoImage:
        """A BO of ``bo_size`` bytes (default: ``data`` page-rounded) starting with ``data``."""
        view = memoryview(data).cast("B")
        size = round_up(len(view), PAGE_SIZE) if bo_size is None else bo_size
        if size < len(view):
            raise InvalidArgumentError(
                f"a BO of {size} bytes cannot hold {len(view)} bytes of data"
            )
        return cls(view, size)

    def byte(self, pos: int) -> int:
        """The byte at ``pos``."""
        return self.view[pos] if pos < self.held else 0

    def read(self, start: int, stop: int) -> bytes:
        """Bytes ``[start, stop)``, zeros included."""
        held = self.view[start : min(stop, self.held)].tobytes() if start < self.held else b""
        return held + bytes(stop - start - len(held))

    def zero_run(self, pos: int, end: int) -> int:
        """How many zero bytes start at ``pos``, at most ``end - pos``."""
        limit = min(end, self.held)
        scan, window = pos, 64
        while scan < limit:
            stop = min(scan + window, limit)
            data = self.view[scan:stop].tobytes()
            if data.count(0) != len(data):
                return scan + len(data) - len(data.lstrip(b"\0")) - pos
            # Most runs are a pair or two; the window grows only for long ones (a BO tail).
            scan, window = stop, min(window * 16, CHUNK)
        return end - pos

    def pieces(self, start: int, stop: int) -> Iterator[Buffer]:
        """``[start, stop)`` in chunks; of the zeros past the held bytes, only the first.

        One zero is all a base64 value running into the zeros can use: it is invalid there.
        """
        held_stop = min(stop, self.held)
        for at in range(start, held_stop, CHUNK):
            yield self.view[at : min(at + CHUNK, held_stop)]
        if stop > max(start, self.held):
            yield b"\0"


@dataclass(frozen=True)
class Field:
    """A field: its number, wire type, tag offset, and content ``[start, stop)``.

    For a length-delimited field the content is what the length prefix covers; for the others it
    is the varint or fixed-size value.
    """

    number: int
    at: int
    start: int
    stop: int
    wire: int = 2


def _truncated(at: int, region: str, end: int) -> KernelRejection:
    detail = f"the field at offset {at} needs more bytes than are left ({region} ends at {end})"
    return refuse("truncated-tag", detail, at)


def _odd_zeros(at: int, run: int, region: str, end: int) -> KernelRejection:
    detail = (
        f"the {run} zero bytes from offset {at} to the end ({region} ends at {end}) are an odd "
        "number: pairs are harmless fields, the last zero is a tag with no varint after it"
    )
    return refuse("truncated-tag", detail, at)


def _varint(bo: BoImage, pos: int, end: int, at: int, region: str) -> tuple[int, int]:
    raw = bo.read(pos, min(pos + _VARINT_LIMIT, end))
    value = 0
    for index, byte in enumerate(raw):
        value |= (byte & 0x7F) << (7 * index)
        if byte < 0x80:
            return value, pos + index + 1
    if len(raw) == _VARINT_LIMIT:
        raise refuse("varint-too-long", f"the varint at offset {pos} is over 10 bytes long", pos)
    raise _truncated(at, region, end)


def _skip(bo: BoImage, tag: int, at: int, pos: int, end: int, region: str) -> int:
    wire = tag & 7
    if wire == _WIRE_VARINT:
        return _varint(bo, pos, end, at, region)[1]
    size = _FIXED_SIZES.get(wire)
    if size is None:
        detail = f"the field at offset {at} has wire type {wire} (only 0, 1, 2 and 5 are skipped)"
        raise refuse("wire-type", detail, at)
    if size > end - pos:
        raise _truncated(at, region, end)
    return pos + size


def all_fields(bo: BoImage, start: int, end: int, region: str) -> Iterator[Field]:
    """Every field in ``[start, end)`` the kernel's loop steps over, zero pairs left out.

    Raises:
        KernelRejection: Where the kernel's loop fails (``region`` names the span in messages).
    """
    pos = start
    while pos < end:
        if bo.byte(pos) == 0:
            # A zero is a field-0 varint tag and a pair of them a whole field, so only the run's
            # parity matters: measure it instead of parsing it pair by pair.
            run = bo.zero_run(pos, end)
            if run % 2 and pos + run == end:
                raise _odd_zeros(pos, run, region, end)
            pos += run - run % 2
            if run % 2 == 0:
                continue
        at = pos
        tag, pos = _varint(bo, pos, end, at, region)
        if tag & 7 != _WIRE_LEN:
            value = pos
            pos = _skip(bo, tag, at, pos, end, region)
            yield Field((tag >> 3) & _U32, at, value, pos, tag & 7)
            continue
        length, pos = _varint(bo, pos, end, at, region)
        if length > end - pos:
            detail = (
                f"the field at offset {at} declares {length} bytes but {end - pos} are left "
                f"({region} ends at {end})"
            )
            raise refuse("length-past-end", detail, at)
        yield Field((tag >> 3) & _U32, at, pos, pos + length)
        pos += length


def fields(bo: BoImage, start: int, end: int, region: str) -> Iterator[Field]:
    """The length-delimited fields in ``[start, end)``; the kernel skips every other one.

    Raises:
        KernelRejection: Where the kernel's loop fails (``region`` names the span in messages).
    """
    return (f for f in all_fields(bo, start, end, region) if f.wire == _WIRE_LEN)


def _check_number_length(length: int, name: str, offset: int | None) -> None:
    if length >= ONNX_NUMBER_LIMIT:
        detail = f"{name} is {length} bytes long; the kernel refuses {ONNX_NUMBER_LIMIT} or more"
        raise refuse("decimal-too-long", detail, offset)


def _kstrtou32(value: bytes, name: str, offset: int | None) -> int:
    text = value.split(b"\0", 1)[0]
    digits = text[1:] if text.startswith(b"+") else text
    count = len(digits) - len(digits.lstrip(b"0123456789"))
    number = int(digits[:count]) if count else 0
    shown = f"{name} = {value!r}"
    # kstrtoull flags a 64-bit overflow while reading the digits, before it looks past them;
    # the 32-bit range is kstrtou32's own check on a result that was otherwise valid.
    if number > _U64:
        raise refuse("decimal-range", f"{shown} overflows 64 bits", offset, ERANGE)
    if not count or digits[count:] not in (b"", b"\n"):
        detail = f"{shown} is not digits with an optional leading '+' and trailing newline"
        raise refuse("decimal-invalid", detail, offset)
    if number > _U32:
        raise refuse("decimal-range", f"{shown} is above {_U32}", offset, ERANGE)
    return number


def parse_decimal(value: bytes) -> int:
    """Parse a td_size/td_count value as the kernel does (rules 6 and 11).

    Args:
        value: The raw metadata value.

    Returns:
        The number.

    Raises:
        KernelRejection: With ``errno.EINVAL`` (too long, not a number) or ``errno.ERANGE``.
    """
    _check_number_length(len(value), "the value", None)
    return _kstrtou32(value, "the value", None)


def _shown(bo: BoImage, part: Field, limit: int = 24) -> str:
    """The start of a field's content, quoted for a message."""
    text = bo.read(part.start, min(part.stop, part.start + limit))
    return repr(text) + ("..." if part.stop - part.start > limit else "")


@dataclass
class Scan:
    """What the scan keeps: each C-string key's last value ``(start, stop)``, and the decimals."""

    entries: dict[bytes, tuple[int, int]] = field(default_factory=dict)
    numbers: dict[bytes, int] = field(default_factory=dict)


def _entry(bo: BoImage, entry: Field, scan: Scan) -> None:
    key = value = None
    region = f"the metadata entry at offset {entry.at}"
    for part in fields(bo, entry.start, entry.stop, region):
        if part.number == _KEY_FIELD:
            key = part
        elif part.number == _VALUE_FIELD:
            value = part
    if key is None or value is None:
        return  # before the length check: an incomplete entry never fails, whatever its key
    if key.stop - key.start >= ONNX_KEY_LIMIT:
        detail = (
            f"{region} has the key {_shown(bo, key)} of {key.stop - key.start} bytes "
            f"(the kernel refuses {ONNX_KEY_LIMIT} or more)"
        )
        raise refuse("key-too-long", detail, key.at)
    # The kernel copies the key into a NUL-terminated buffer and compares C strings.
    name = bo.read(key.start, key.stop).split(b"\0", 1)[0]
    scan.entries[name] = (value.start, value.stop)
    if name in (TD_SIZE_KEY, TD_COUNT_KEY):  # parsed now, not after the scan (rule 10)
        shown = f"{name.decode()} at offset {value.start}"
        if value.stop - value.start >= ONNX_NUMBER_LIMIT:
            shown = f"{name.decode()} = {_shown(bo, value)} at offset {value.start}"
        _check_number_length(value.stop - value.start, shown, value.start)
        scan.numbers[name] = _kstrtou32(bo.read(value.start, value.stop), shown, value.start)


def scan(bo: BoImage) -> Scan:
    """Run the kernel's scan over the whole BO.

    Raises:
        KernelRejection: The structure, a key's length or a td_size/td_count value.
    """
    found = Scan()
    for top in fields(bo, 0, bo.size, "the BO"):
        if top.number == _METADATA_FIELD:
            _entry(bo, top, found)
    return found


def parse_entries(data: Buffer, bo_size: int | None = None) -> dict[bytes, bytes]:
    """The metadata entries as the kernel sees them: C-string keys, the last entry wins.

    Args:
        data: The bytes at the start of the BO.
        bo_size: The BO size (default: ``len(data)`` rounded up to ``PAGE_SIZE``); zeros follow
            ``data`` up to it.

    Returns:
        Every complete entry's value by key (foreign keys too), undecoded.

    Raises:
        KernelRejection: The scan itself fails (structure, key length, td_size/td_count); the
            post-scan checks (payloads, zero sizes) are not applied.
    """
    bo = BoImage.holding(data, bo_size)
    return {key: bo.read(start, stop) for key, (start, stop) in scan(bo).entries.items()}
