"""Read, write and verify the ``ane.*`` metadata that makes an ONNX model an ANE container.

Everything works on the protobuf wire format: the graph (field 7) is skipped or copied by its
length prefix and payloads are streamed in chunks, so reading metadata costs O(number of top-level
fields) and writing uses flat memory whatever the model size. This module must not parse the graph
(except to find external data files when the output goes to another folder), must not read external
data, must not touch devices, and must never leave a partial output file behind.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import io
import json
import logging
import os
import re
import stat
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, BinaryIO, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from .._fs import os_reason, replace_atomically
from .._typing import BytesLike, StrPath
from ..driver.uapi import ANE_CMD_GRAN, ANE_TILE_COUNT, TD_COUNT_LIMIT
from ..errors import (
    AneError,
    ContainerError,
    DescriptorChainError,
    MetadataError,
    MissingAneMetadataError,
    ModelFileError,
    VerificationError,
    WireFormatError,
)
from ..formats import protowire as pw
from ..formats.microcode import walk_chain
from ..formats.payload import IoSlot, PayloadRef

log = logging.getLogger(__name__)

KEY_MICROCODE = "ane.microcode.b64"
KEY_WEIGHTS = "ane.weights.b64"
KEY_TD_SIZE = "ane.td_size"
KEY_TD_COUNT = "ane.td_count"
KEY_TILE_DESCRIPTORS = "ane.tile_descriptors.b64"
KEY_FORMAT = "ane.format"
KEY_MICROCODE_SHA256 = "ane.microcode.sha256"
KEY_WEIGHTS_SHA256 = "ane.weights.sha256"
KEY_TILE_DESCRIPTORS_SHA256 = "ane.tile_descriptors.sha256"
KEY_SOURCE_SHA256 = "ane.source.sha256"
KEY_TOOLCHAIN = "ane.toolchain"
KEY_IO = "ane.io"
KEY_TILES = "ane.tiles"
ANE_KEY_PREFIX = "ane."
REQUIRED_KEYS = (KEY_MICROCODE, KEY_TD_SIZE, KEY_TD_COUNT)
CONTAINER_FORMAT = "1"

KERNEL_KEY_LIMIT = 64
# The fork kernel reads td_size/td_count as decimal strings shorter than this (DESIGN section 3).
KERNEL_NUMBER_LIMIT = 32
# protobuf refuses to parse or serialize a message of 2 GiB or more.
PROTOBUF_LIMIT = 2**31 - 1
# Values other than payloads are read whole; a bound keeps a hostile file from making them huge.
SMALL_VALUE_LIMIT = 1 << 20

_READ_BUFFER = 16 << 10
_COPY_CHUNK = 4 << 20
# A multiple of 3, so every chunk but the last encodes to base64 without padding.
_B64_RAW_CHUNK = 3 << 20
_B64_TEXT_CHUNK = 4 << 20
_B64_PROBE = 1024
_KEY_READ_LIMIT = 4096
# Entries up to this size are read whole and scanned in memory; larger ones hold a payload.
_SMALL_ENTRY = 4096
# Chunks queued for the writer thread; bounds memory at a few chunks whatever the payload size.
_MAX_IN_FLIGHT = 3

_WHITESPACE = b" \t\n\r\v\f"
_URLSAFE_TO_STD = bytes.maketrans(b"-_", b"+/")
_STD_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_NOT_KERNEL_B64 = re.compile(rb"[^A-Za-z0-9+/\-_= \t\n\r\v\f]")
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")

_T = TypeVar("_T")


class _Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


@dataclass(frozen=True)
class _PayloadKeys:
    name: str
    b64: str
    sha256: str
    kernel: bool


_MICROCODE = _PayloadKeys("microcode", KEY_MICROCODE, KEY_MICROCODE_SHA256, kernel=True)
_WEIGHTS = _PayloadKeys("weights", KEY_WEIGHTS, KEY_WEIGHTS_SHA256, kernel=True)
_TILE_DESCRIPTORS = _PayloadKeys(
    "tile_descriptors", KEY_TILE_DESCRIPTORS, KEY_TILE_DESCRIPTORS_SHA256, kernel=False
)
_PAYLOADS = (_MICROCODE, _WEIGHTS, _TILE_DESCRIPTORS)


def kernel_accepts_key(key: str) -> bool:
    """Whether the fork kernel accepts a metadata key of this name (fewer than 64 UTF-8 bytes)."""
    return len(key.encode("utf-8")) < KERNEL_KEY_LIMIT


def base64_length(size: int) -> int:
    """Length of the padded base64 text of ``size`` bytes."""
    return 4 * ((size + 2) // 3)


class AneModelMetadata(BaseModel):
    """The ``ane.*`` metadata of a container, read without decoding the payloads.

    Payload lengths are computed from the base64 text length and its padding; digests are the
    stated ones (`verify_container` checks them against the payloads).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    file_size: int
    has_graph: bool
    microcode_len: int
    weights_len: int
    tile_descriptors_len: int
    td_size: int
    td_count: int
    format: str | None = None
    toolchain: str | None = None
    io: dict[int, IoSlot] = {}
    tiles: dict[int, int] = {}
    microcode_sha256: str | None = None
    weights_sha256: str | None = None
    tile_descriptors_sha256: str | None = None
    source_sha256: str | None = None
    keys: tuple[str, ...] = ()
    foreign_keys: tuple[str, ...] = ()

    @property
    def has_weights(self) -> bool:
        """Whether the container carries an ``ane.weights.b64`` entry."""
        return KEY_WEIGHTS in self.keys


@dataclass(frozen=True)
class AnePayloads:
    """Decoded payloads of a container; empty bytes for an absent optional payload."""

    microcode: bytes
    weights: bytes = b""
    tile_descriptors: bytes = b""


@dataclass(frozen=True)
class Check:
    """One verification rule and its outcome."""

    name: str
    ok: bool
    detail: str = ""


@dataclass
class VerifyReport:
    """Outcome of `verify_container`: every rule checked, in order.

    Attributes:
        path: The container (``<bytes>`` for in-memory data).
        checks: One entry per rule that could be evaluated.
        metadata: The parsed metadata, when it could be parsed.
    """

    path: str
    checks: list[Check] = field(default_factory=list)
    metadata: AneModelMetadata | None = None

    @property
    def ok(self) -> bool:
        """True when every check passed (and there was at least one)."""
        return bool(self.checks) and all(check.ok for check in self.checks)

    @property
    def failures(self) -> list[Check]:
        """The checks that failed."""
        return [check for check in self.checks if not check.ok]

    def add(self, name: str, ok: bool, detail: str = "") -> None:
        """Record one check."""
        self.checks.append(Check(name, ok, detail))

    def summary(self) -> str:
        """Render the report: a header line, then one PASS/FAIL line per check."""
        failed = len(self.failures)
        head = "OK" if self.ok else f"FAILED ({failed} of {len(self.checks)} checks)"
        lines = [f"{self.path}: {head}"]
        lines += [
            f"{'PASS' if check.ok else 'FAIL'} {check.name}"
            + (f": {check.detail}" if check.detail else "")
            for check in self.checks
        ]
        return "\n".join(lines)

    def raise_for_failure(self) -> None:
        """Raise `ContainerVerificationError` listing the failed checks, if any failed.

        Raises:
            ContainerVerificationError: At least one check failed.
        """
        if not self.ok:
            raise ContainerVerificationError(self)


class ContainerVerificationError(VerificationError):
    """A container failed `verify_container`; ``report`` holds every check."""

    def __init__(self, report: VerifyReport) -> None:
        lines = [f"  {check.name}: {check.detail}" for check in report.failures]
        if not report.checks:
            lines = ["  nothing could be checked"]
        super().__init__(f"{report.path}: container verification failed:\n" + "\n".join(lines))
        self.report = report


# --- reading ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    key: str
    key_size: int
    field: pw.WireField
    value_offset: int
    value_length: int


@dataclass(frozen=True)
class _Scan:
    label: str
    size: int
    fields: tuple[pw.WireField, ...]
    entries: tuple[_Entry, ...]

    @property
    def has_graph(self) -> bool:
        return any(f.number == pw.MODEL_GRAPH for f in self.fields)

    def ane_entries(self) -> dict[str, _Entry]:
        # protobuf semantics would keep both; the last one wins like a map, and checks flag it.
        return {e.key: e for e in self.entries if e.key.startswith(ANE_KEY_PREFIX)}

    def duplicate_keys(self) -> list[str]:
        seen: set[str] = set()
        dups: list[str] = []
        for entry in self.entries:
            if entry.key in seen and entry.key not in dups:
                dups.append(entry.key)
            seen.add(entry.key)
        return dups


def _label(model: StrPath | BytesLike) -> str:
    return "<bytes>" if isinstance(model, bytes | bytearray | memoryview) else os.fspath(model)


@contextmanager
def _open_model(model: StrPath | BytesLike) -> Iterator[tuple[BinaryIO, str]]:
    """Open a model path (or wrap bytes); OS errors come out as `ModelFileError`."""
    if isinstance(model, bytes | bytearray | memoryview):
        yield io.BytesIO(model), "<bytes>"
        return
    label = os.fspath(model)
    try:
        mode = os.stat(label).st_mode
    except OSError:
        mode = stat.S_IFREG  # open() below says what is wrong
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        # Opening a FIFO blocks until a writer appears, forever in a build; a device never ends.
        raise ModelFileError(f"{label}: cannot open: not a regular file (a FIFO, socket or device)")
    try:
        stream = open(label, "rb", buffering=_READ_BUFFER)  # noqa: SIM115 - closed below
    except OSError as exc:
        raise ModelFileError(f"{label}: cannot open: {exc.strerror or exc}") from exc
    with stream:
        try:
            yield stream, label
        except AneError:
            raise
        except OSError as exc:
            raise ModelFileError(f"{label}: cannot read: {exc.strerror or exc}") from exc


def _read_entry(stream: BinaryIO, top: pw.WireField) -> _Entry:
    body: bytes | None = None
    if top.length <= _SMALL_ENTRY:
        body = pw.read_range(stream, top.value_offset, top.length)
        try:
            subs = list(pw.iter_fields(body))
        except WireFormatError:
            # Scan it again from the stream, whose errors give offsets in the file.
            body = None
    if body is None:
        subs = list(pw.iter_stream_fields(stream, top.value_offset, top.end))
        base = 0
    else:
        base = top.value_offset
    key_field: pw.WireField | None = None
    value_field: pw.WireField | None = None
    for sub in subs:
        if sub.number not in (pw.ENTRY_KEY, pw.ENTRY_VALUE):
            continue
        if sub.wire_type != pw.WIRE_LEN:
            raise WireFormatError(
                f"metadata entry field {sub.number} at byte {base + sub.offset} has wire type "
                f"{sub.wire_type}; a string is length-delimited"
            )
        # A repeated singular field means the last one wins, as in protobuf.
        if sub.number == pw.ENTRY_KEY:
            key_field = sub
        else:
            value_field = sub
    key, key_size = "", 0
    if key_field is not None:
        key_size = key_field.length
        start, length = key_field.value_offset, min(key_size, _KEY_READ_LIMIT)
        raw = (
            body[start : start + length]
            if body is not None
            else pw.read_range(stream, start, length)
        )
        key = raw.decode("utf-8", "replace") + ("..." if key_size > _KEY_READ_LIMIT else "")
    if value_field is None:
        return _Entry(key, key_size, top, top.end, 0)
    return _Entry(key, key_size, top, base + value_field.value_offset, value_field.length)


def _scan(stream: BinaryIO, label: str) -> _Scan:
    """Read the top-level fields and the metadata entries' keys; values are located, not read."""
    size = pw.file_size(stream)
    fields: list[pw.WireField] = []
    entries: list[_Entry] = []
    try:
        for top in pw.iter_file_fields(stream, size):
            fields.append(top)
            if top.number in (pw.MODEL_GRAPH, pw.MODEL_METADATA_PROPS):
                if top.wire_type != pw.WIRE_LEN:
                    raise WireFormatError(
                        f"field {top.number} at byte {top.offset} has wire type {top.wire_type}; "
                        "ModelProto declares it length-delimited"
                    )
                if top.number == pw.MODEL_METADATA_PROPS:
                    entries.append(_read_entry(stream, top))
    except WireFormatError as exc:
        raise WireFormatError(f"{label}: not a valid ONNX protobuf: {exc}") from exc
    return _Scan(label, size, tuple(fields), tuple(entries))


def _show(text: str | bytes, limit: int = 80) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _bad(label: str, key: str, value: str | bytes | None, reason: str) -> MetadataError:
    shown = "" if value is None else f" = {_show(value)}"
    return MetadataError(f"{label}: {key}{shown}: {reason}")


def _read_text(stream: BinaryIO, label: str, entry: _Entry) -> str:
    if entry.value_length > SMALL_VALUE_LIMIT:
        raise _bad(
            label,
            entry.key,
            None,
            f"value is {entry.value_length} bytes; at most {SMALL_VALUE_LIMIT} are expected",
        )
    raw = pw.read_range(stream, entry.value_offset, entry.value_length)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad(label, entry.key, raw, "not valid UTF-8") from exc


def _parse_decimal(text: str, key: str, label: str) -> int:
    """Parse ``td_size``/``td_count`` as the fork kernel does: decimal, < 32 chars, non-zero."""
    if len(text) >= KERNEL_NUMBER_LIMIT:
        raise _bad(
            label,
            key,
            text,
            f"{len(text)} characters; the kernel reads at most {KERNEL_NUMBER_LIMIT - 1}",
        )
    if not (text.isascii() and text.isdigit()):
        raise _bad(label, key, text, "not a decimal number (digits 0-9 only)")
    value = int(text)
    if value == 0:
        raise _bad(label, key, text, "must not be zero (the kernel rejects it)")
    if value > 0xFFFFFFFF:
        raise _bad(label, key, text, "does not fit the 32-bit submit field")
    return value


def _parse_digest(text: str, key: str, label: str) -> str:
    if not _HEX_DIGEST.fullmatch(text):
        raise _bad(label, key, text, "not a sha256 digest (64 lowercase hex digits)")
    return text


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in pairs:
        if name in out:
            raise ValueError(f"duplicate key {name!r}")
        out[name] = value
    return out


def _json_object(text: str, key: str, label: str) -> dict[str, Any]:
    try:
        obj = json.loads(text, object_pairs_hook=_unique_pairs)
    except RecursionError as exc:
        raise _bad(label, key, text, "invalid JSON: nested too deeply") from exc
    except ValueError as exc:
        raise _bad(label, key, text, f"invalid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise _bad(label, key, text, "expected a JSON object keyed by slot number")
    return obj


def _parse_slot(name: str, key: str, label: str, text: str) -> int:
    # The length bound comes first: int() of a huge digit string is slow, then refused.
    if not (name.isascii() and name.isdigit() and len(name) <= 2 and int(name) < ANE_TILE_COUNT):
        raise _bad(
            label,
            key,
            text,
            f"slot key {name!r}: slot keys are decimal numbers from 0 to {ANE_TILE_COUNT - 1}",
        )
    return int(name)


def _parse_io(text: str, label: str) -> dict[int, IoSlot]:
    slots: dict[int, IoSlot] = {}
    for name, value in _json_object(text, KEY_IO, label).items():
        slot = _parse_slot(name, KEY_IO, label, text)
        try:
            slots[slot] = IoSlot.model_validate(value)
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(p) for p in problem["loc"])
            raise _bad(
                label, KEY_IO, text, f"slot {slot}: {where or 'value'}: {problem['msg']}"
            ) from exc
    return dict(sorted(slots.items()))


def _parse_tiles(text: str, label: str) -> dict[int, int]:
    tiles: dict[int, int] = {}
    for name, value in _json_object(text, KEY_TILES, label).items():
        slot = _parse_slot(name, KEY_TILES, label, text)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _bad(label, KEY_TILES, text, f"slot {slot}: BO size must be a byte count >= 0")
        tiles[slot] = value
    return dict(sorted(tiles.items()))


def _data_chars(text: bytes) -> int:
    """Number of base64 data characters in ``text`` (whitespace and padding excluded)."""
    return len(text.translate(None, _WHITESPACE + b"="))


def _has_whitespace(text: bytes) -> bool:
    return len(text.translate(None, _WHITESPACE)) != len(text)


def _b64_decoded_length(stream: BinaryIO, label: str, entry: _Entry) -> int:
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
            chars = sum(_data_chars(chunk) for chunk in _iter_range(stream, start, length))
        else:
            chars = length - (len(tail) - len(tail.rstrip(b"=")))
            if chars % 4 == 1:
                # No whitespace-free base64 has this length: there is whitespace in the middle.
                chars = sum(_data_chars(chunk) for chunk in _iter_range(stream, start, length))
    if chars % 4 == 1:
        raise _bad(
            label,
            entry.key,
            None,
            f"not valid base64: {chars} data characters is one more than a multiple of 4",
        )
    return chars * 3 // 4


def _iter_range(
    stream: BinaryIO, start: int, length: int, chunk: int = _B64_TEXT_CHUNK
) -> Iterator[bytes]:
    pos, end = start, start + length
    while pos < end:
        data = pw.read_range(stream, pos, min(chunk, end - pos))
        pos += len(data)
        yield data


def _missing_message(label: str, missing: Sequence[str]) -> str:
    model = label if label != "<bytes>" else "MODEL"
    return (
        f"{label}: not an ANE container: missing {', '.join(missing)}. Add the compiled payload "
        f"with `convert-to-ane {model} --anec FILE` (an .anec/.ane file from the compiler) or "
        f"`convert-to-ane {model} --artifact-root DIR` (a folder of compiler artefacts)"
    )


def _checked_ane_entries(scan: _Scan, required: Sequence[str]) -> dict[str, _Entry]:
    ane = scan.ane_entries()
    missing = [key for key in required if key not in ane]
    if missing:
        raise MissingAneMetadataError(_missing_message(scan.label, missing))
    dups = [key for key in scan.duplicate_keys() if key.startswith(ANE_KEY_PREFIX)]
    if dups:
        raise MetadataError(
            f"{scan.label}: metadata key {dups[0]!r} appears more than once; rebuild the "
            "container so each ane.* key is written once"
        )
    return ane


def _metadata_from_scan(scan: _Scan, stream: BinaryIO) -> AneModelMetadata:
    label = scan.label
    ane = _checked_ane_entries(scan, REQUIRED_KEYS)

    def text(key: str) -> str | None:
        return _read_text(stream, label, ane[key]) if key in ane else None

    def digest(key: str) -> str | None:
        value = text(key)
        return None if value is None else _parse_digest(value, key, label)

    lengths = {
        p.name: _b64_decoded_length(stream, label, ane[p.b64]) if p.b64 in ane else 0
        for p in _PAYLOADS
    }
    io_text, tiles_text = text(KEY_IO), text(KEY_TILES)
    return AneModelMetadata(
        path=label,
        file_size=scan.size,
        has_graph=scan.has_graph,
        microcode_len=lengths[_MICROCODE.name],
        weights_len=lengths[_WEIGHTS.name],
        tile_descriptors_len=lengths[_TILE_DESCRIPTORS.name],
        td_size=_parse_decimal(_read_text(stream, label, ane[KEY_TD_SIZE]), KEY_TD_SIZE, label),
        td_count=_parse_decimal(_read_text(stream, label, ane[KEY_TD_COUNT]), KEY_TD_COUNT, label),
        format=text(KEY_FORMAT),
        toolchain=text(KEY_TOOLCHAIN),
        io={} if io_text is None else _parse_io(io_text, label),
        tiles={} if tiles_text is None else _parse_tiles(tiles_text, label),
        microcode_sha256=digest(KEY_MICROCODE_SHA256),
        weights_sha256=digest(KEY_WEIGHTS_SHA256),
        tile_descriptors_sha256=digest(KEY_TILE_DESCRIPTORS_SHA256),
        source_sha256=digest(KEY_SOURCE_SHA256),
        keys=tuple(e.key for e in scan.entries),
        foreign_keys=tuple(e.key for e in scan.entries if not e.key.startswith(ANE_KEY_PREFIX)),
    )


def parse_ane_metadata(model: StrPath | BytesLike) -> AneModelMetadata:
    """Read a container's ``ane.*`` metadata without reading its graph or its payloads.

    Cost is O(number of top-level fields + size of the small values): the graph is skipped by its
    length prefix, and payload lengths come from a look at both ends of their base64 text. Works on
    files of any size; external data is never opened.

    Args:
        model: Path of an ONNX file, or its bytes.

    Returns:
        The metadata. A model without a graph parses (`verify_container` flags it).

    Raises:
        ModelFileError: The file cannot be opened or read.
        WireFormatError: The protobuf is truncated or malformed (names the byte offset).
        MissingAneMetadataError: ``ane.microcode.b64``, ``ane.td_size`` or ``ane.td_count`` is
            missing.
        MetadataError: A value is invalid (names the key and the value).
    """
    with _open_model(model) as (stream, label):
        return _metadata_from_scan(_scan(stream, label), stream)


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


def _iter_decoded(stream: BinaryIO, label: str, entry: _Entry) -> Iterator[bytes]:
    decoder = _KernelBase64Decoder(label, entry.key)
    for raw in _iter_range(stream, entry.value_offset, entry.value_length):
        chunk = decoder.feed(raw)
        if chunk:
            yield chunk
    tail = decoder.finish()
    if tail:
        yield tail


def read_ane_payloads(model: StrPath | BytesLike) -> AnePayloads:
    """Decode the microcode, weights and tile descriptors of a container.

    The payloads are held in memory; use `verify_container` to check a large container in
    constant memory.

    Raises:
        ModelFileError: The file cannot be opened or read.
        WireFormatError: The protobuf is truncated or malformed.
        MissingAneMetadataError: There is no ``ane.microcode.b64``.
        MetadataError: A payload is not valid base64 (names the key), or a key is duplicated.
    """
    with _open_model(model) as (stream, label):
        ane = _checked_ane_entries(_scan(stream, label), (KEY_MICROCODE,))
        values = {
            p.name: b"".join(_iter_decoded(stream, label, ane[p.b64])) if p.b64 in ane else b""
            for p in _PAYLOADS
        }
    return AnePayloads(
        microcode=values[_MICROCODE.name],
        weights=values[_WEIGHTS.name],
        tile_descriptors=values[_TILE_DESCRIPTORS.name],
    )


# --- verifying -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Decoded:
    length: int
    sha256: str
    data: bytes | None


def _decode_for_check(stream: BinaryIO, label: str, entry: _Entry, keep: bool) -> _Decoded:
    digest = hashlib.sha256()
    kept: list[bytes] = []
    length = 0
    for chunk in _iter_decoded(stream, label, entry):
        digest.update(chunk)
        length += len(chunk)
        if keep:
            kept.append(chunk)
    return _Decoded(length, digest.hexdigest(), b"".join(kept) if keep else None)


def _attempt(
    report: VerifyReport, name: str, run: Callable[[], _T], describe: Callable[[_T], str]
) -> _T | None:
    """Run one check that raises `MetadataError` on failure; record the outcome."""
    try:
        value = run()
    except MetadataError as exc:
        report.add(name, False, str(exc))
        return None
    report.add(name, True, describe(value))
    return value


def _verify_payloads(
    report: VerifyReport, stream: BinaryIO, scan: _Scan, ane: dict[str, _Entry], strict: bool
) -> dict[str, _Decoded]:
    decoded: dict[str, _Decoded] = {}
    for p in _PAYLOADS:
        if p.b64 not in ane:
            if p.sha256 in ane:
                report.add(f"{p.sha256}", False, f"stated, but there is no {p.b64}")
            continue

        def run(p: _PayloadKeys = p) -> _Decoded:
            result = _decode_for_check(stream, scan.label, ane[p.b64], keep=p is not _WEIGHTS)
            if p is _MICROCODE and result.length == 0:
                raise MetadataError(
                    f"{scan.label}: {p.b64} decodes to 0 bytes; the kernel rejects it"
                )
            return result

        prefix = "kernel: " if p.kernel else ""
        result = _attempt(report, f"{prefix}{p.b64} base64", run, lambda d: f"{d.length} bytes")
        if result is None:
            continue
        decoded[p.name] = result
        if p.sha256 not in ane:
            if strict:
                report.add(p.sha256, False, "missing (strict verification wants every digest)")
            continue
        try:
            stated = _parse_digest(
                _read_text(stream, scan.label, ane[p.sha256]), p.sha256, scan.label
            )
        except MetadataError as exc:
            report.add(p.sha256, False, str(exc))
            continue
        ok = stated == result.sha256
        detail = "matches" if ok else f"states {stated} but the payload hashes to {result.sha256}"
        report.add(p.sha256, ok, detail)
    return decoded


def _verify_chain(
    report: VerifyReport, microcode: bytes, td_size: int, td_count: int | None, label: str
) -> None:
    try:
        chain = walk_chain(microcode, td_size, source=label)
    except DescriptorChainError as exc:
        report.add("descriptor chain", False, f"{exc} (walked with {KEY_TD_SIZE} = {td_size})")
        return
    problems = []
    if td_count is not None and chain.td_count != td_count:
        problems.append(
            f"ane.td_count is {td_count} but the chain has {chain.td_count} descriptors"
        )
    if chain.tsk_size > len(microcode):
        problems.append(f"tsk_size {chain.tsk_size} exceeds the microcode ({len(microcode)} bytes)")
    data_end = len(microcode.rstrip(b"\0"))
    if data_end > chain.tsk_size:
        # As the converter refuses: code after the end-of-network descriptor never runs, so the
        # chain (hence td_size) does not describe this microcode.
        problems.append(
            f"with {KEY_TD_SIZE} = {td_size} the chain ends at byte 0x{chain.tsk_size:x}, but the "
            f"microcode has non-zero data up to 0x{data_end:x}"
        )
    detail = "; ".join(problems) or (
        f"{chain.td_count} descriptor(s), td_size {chain.td_size}, tsk_size {chain.tsk_size} "
        f"<= microcode {len(microcode)} bytes"
    )
    report.add("descriptor chain", not problems, detail)


def _verify_stream(report: VerifyReport, stream: BinaryIO, label: str, strict: bool) -> None:
    try:
        scan = _scan(stream, label)
    except WireFormatError as exc:
        report.add("wire format", False, str(exc))
        return
    report.add(
        "wire format",
        True,
        f"{len(scan.fields)} top-level fields, {len(scan.entries)} metadata entries, "
        f"{scan.size} bytes",
    )
    report.add(
        "graph",
        scan.has_graph,
        "present" if scan.has_graph else "no graph (field 7): not a loadable ONNX model",
    )
    report.add(
        "protobuf size",
        scan.size <= PROTOBUF_LIMIT,
        f"{scan.size} bytes" + ("" if scan.size <= PROTOBUF_LIMIT else " (limit 2 GiB - 1)"),
    )
    long_keys = [
        f"{e.key!r} ({e.key_size} bytes)" for e in scan.entries if e.key_size >= KERNEL_KEY_LIMIT
    ]
    report.add(
        "kernel: key length",
        not long_keys,
        f"keys of {KERNEL_KEY_LIMIT} bytes or more: {', '.join(long_keys)}"
        if long_keys
        else f"all {len(scan.entries)} keys < {KERNEL_KEY_LIMIT} bytes",
    )
    dups = scan.duplicate_keys()
    report.add("unique keys", not dups, f"repeated: {', '.join(dups)}" if dups else "")
    ane = scan.ane_entries()
    missing = [key for key in REQUIRED_KEYS if key not in ane]
    report.add(
        "kernel: required keys",
        not missing,
        _missing_message(label, missing) if missing else ", ".join(REQUIRED_KEYS),
    )

    numbers: dict[str, int | None] = {}
    for key in (KEY_TD_SIZE, KEY_TD_COUNT):
        if key in ane:

            def read_number(key: str = key) -> int:
                return _parse_decimal(_read_text(stream, label, ane[key]), key, label)

            numbers[key] = _attempt(report, f"kernel: {key}", read_number, str)
    decoded = _verify_payloads(report, stream, scan, ane, strict)

    microcode = decoded.get(_MICROCODE.name)
    if microcode is not None:
        weights = decoded[_WEIGHTS.name].length if _WEIGHTS.name in decoded else 0
        need = -(-microcode.length // ANE_CMD_GRAN) * ANE_CMD_GRAN + weights
        report.add(
            "kernel: payload fits slot-0 BO",
            need <= scan.size,
            f"microcode padded to {ANE_CMD_GRAN} + weights = {need} bytes, container "
            f"{scan.size} bytes",
        )
        td_size = numbers.get(KEY_TD_SIZE)
        if microcode.data is not None and td_size is not None:
            _verify_chain(report, microcode.data, td_size, numbers.get(KEY_TD_COUNT), label)

    if KEY_IO in ane:
        _attempt(
            report,
            KEY_IO,
            lambda: _parse_io(_read_text(stream, label, ane[KEY_IO]), label),
            lambda slots: f"{len(slots)} slot(s)",
        )
    if KEY_TILES in ane:
        _attempt(
            report,
            KEY_TILES,
            lambda: _parse_tiles(_read_text(stream, label, ane[KEY_TILES]), label),
            lambda tiles: f"{len(tiles)} slot(s)",
        )
    if KEY_FORMAT in ane:

        def read_format() -> str:
            fmt = _read_text(stream, label, ane[KEY_FORMAT])
            if fmt != CONTAINER_FORMAT:
                raise _bad(
                    label, KEY_FORMAT, fmt, f"this version reads format {CONTAINER_FORMAT!r}"
                )
            return fmt

        _attempt(report, KEY_FORMAT, read_format, str)
    elif strict:
        report.add(KEY_FORMAT, False, "missing (strict verification wants the container format)")
    if KEY_SOURCE_SHA256 in ane:
        _attempt(
            report,
            KEY_SOURCE_SHA256,
            lambda: _parse_digest(
                _read_text(stream, label, ane[KEY_SOURCE_SHA256]), KEY_SOURCE_SHA256, label
            ),
            lambda value: value,
        )
    elif strict:
        report.add(KEY_SOURCE_SHA256, False, "missing (strict verification wants the source)")

    if not missing:
        try:
            report.metadata = _metadata_from_scan(scan, stream)
        except MetadataError as exc:
            # Only reached for a rule no check above covers, so the report never reads as OK.
            if report.ok:
                report.add("metadata", False, str(exc))


def verify_container(model: StrPath | BytesLike, *, strict: bool = True) -> VerifyReport:
    """Check a container against every rule of the fork kernel and our own metadata rules.

    Kernel rules: every key < 64 bytes; microcode, ``td_size`` and ``td_count`` present, the
    numbers decimal, < 32 characters and non-zero; payloads valid base64 in the kernel's alphabet;
    microcode non-empty; microcode and weights fit the slot-0 BO. Ours: a graph is present, the
    file is under the protobuf limit, keys are unique, digests match the decoded payloads, the
    descriptor chain agrees with ``td_size``/``td_count`` and fits the microcode, ``ane.io`` and
    ``ane.tiles`` are valid. Payloads are decoded in chunks, so memory stays flat.

    Args:
        model: Path of an ONNX file, or its bytes.
        strict: Also require what `embed_ane_metadata` always writes: ``ane.format``, a digest for
            every payload and ``ane.source.sha256``.

    Returns:
        The report; problems with the content (even an unreadable file) are failed checks, not
        exceptions. Use `VerifyReport.raise_for_failure` to turn failures into an exception.
    """
    report = VerifyReport(path=_label(model))
    try:
        with _open_model(model) as (stream, label):
            _verify_stream(report, stream, label, strict)
    except (ModelFileError, WireFormatError) as exc:
        # WireFormatError here means the file changed under us while a value was read.
        report.add("readable", False, str(exc))
    return report


# --- writing ---------------------------------------------------------------------------------

ProgressCallback = Callable[[int, int], None]


def _entry_header(key: str, value_length: int) -> bytes:
    """A top-level metadata_props field up to its value (the value follows, maybe streamed)."""
    head = pw.encode_entry_head(key.encode("utf-8"), value_length)
    return pw.encode_len_header(pw.MODEL_METADATA_PROPS, len(head) + value_length) + head


def _entry_size(key: str, value_length: int) -> int:
    return len(_entry_header(key, value_length)) + value_length


def _small(key: str, value: str) -> tuple[str, bytes]:
    return key, value.encode("utf-8")


def _slot_json(values: Mapping[int, Any]) -> str:
    """Compact JSON object keyed by slot number, in slot order."""
    return json.dumps({str(slot): values[slot] for slot in sorted(values)}, separators=(",", ":"))


def _check_slot(slot: object, what: str) -> int:
    if isinstance(slot, bool) or not isinstance(slot, int) or not 0 <= slot < ANE_TILE_COUNT:
        raise ContainerError(
            f"{what}: slot {slot!r} is not a number from 0 to {ANE_TILE_COUNT - 1}"
        )
    return slot


def _embed_values(
    microcode: PayloadRef,
    td_size: int,
    td_count: int,
    toolchain: str | None,
    io_slots: Mapping[int, IoSlot] | None,
    tiles: Mapping[int, int] | None,
) -> list[tuple[str, bytes]]:
    """Validate the arguments of `embed_ane_metadata`; return the small entries to write."""
    if microcode.length <= 0:
        raise ContainerError(f"microcode {microcode.label} is empty; the kernel needs a program")
    for name, value in (("td_size", td_size), ("td_count", td_count)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ContainerError(f"{name} must be an int, got {value!r}")
    if td_size <= 0 or td_size % 4 or td_size > microcode.length:
        raise ContainerError(
            f"td_size {td_size} must be a positive multiple of 4 no larger than the microcode "
            f"({microcode.length} bytes); M1 descriptors are 628 bytes"
        )
    if not 0 < td_count < TD_COUNT_LIMIT:
        raise ContainerError(f"td_count {td_count} must be from 1 to {TD_COUNT_LIMIT - 1}")
    entries = [
        _small(KEY_TD_SIZE, str(td_size)),
        _small(KEY_TD_COUNT, str(td_count)),
        _small(KEY_FORMAT, CONTAINER_FORMAT),
    ]
    if toolchain is not None:
        entries.append(_small(KEY_TOOLCHAIN, toolchain))
    if io_slots is not None:
        dumped: dict[int, Any] = {}
        for slot, spec in io_slots.items():
            try:
                checked = IoSlot.model_validate(spec)
            except ValidationError as exc:
                raise ContainerError(f"io slot {slot}: {exc}") from exc
            dumped[_check_slot(slot, "io")] = checked.model_dump(mode="json")
        entries.append(_small(KEY_IO, _slot_json(dumped)))
    if tiles is not None:
        sizes: dict[int, int] = {}
        for slot, size in tiles.items():
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise ContainerError(f"tiles: slot {slot} size {size!r} is not a byte count >= 0")
            sizes[_check_slot(slot, "tiles")] = size
        entries.append(_small(KEY_TILES, _slot_json(sizes)))
    for key, text in entries:
        if len(text) > SMALL_VALUE_LIMIT:
            raise ContainerError(f"{key} is {len(text)} bytes; at most {SMALL_VALUE_LIMIT} fit")
    return entries


@dataclass(frozen=True)
class _Run:
    start: int
    end: int
    keep: bool


def _runs(fields: Iterable[pw.WireField], drop: set[int]) -> list[_Run]:
    """Merge adjacent fields into runs that are all kept or all dropped (fewer, larger copies)."""
    runs: list[_Run] = []
    for top in fields:
        keep = top.offset not in drop
        if runs and runs[-1].keep == keep and runs[-1].end == top.offset:
            runs[-1] = _Run(runs[-1].start, top.end, keep)
        else:
            runs.append(_Run(top.offset, top.end, keep))
    return runs


@dataclass(frozen=True)
class _Plan:
    head: list[_Run]
    tail: list[_Run]
    small: list[tuple[str, bytes]]
    payloads: list[tuple[_PayloadKeys, PayloadRef]]
    digest_keys: list[str]
    total: int


def _plan(
    scan: _Scan,
    small: list[tuple[str, bytes]],
    payloads: list[tuple[_PayloadKeys, PayloadRef]],
    output: Path,
) -> _Plan:
    """Decide what goes where and check the result before a byte is written."""
    if not scan.has_graph:
        raise ContainerError(
            f"{scan.label}: has no graph (field 7), so it is not an ONNX model to build from"
        )
    stale = {e.field.offset for e in scan.entries if e.key.startswith(ANE_KEY_PREFIX)}
    long_keys = [
        e.key
        for e in scan.entries
        if e.key_size >= KERNEL_KEY_LIMIT and e.field.offset not in stale
    ]
    if long_keys:
        raise ContainerError(
            f"{scan.label}: the kernel rejects any metadata key of {KERNEL_KEY_LIMIT} bytes or "
            f"more, and this model has {', '.join(repr(k) for k in long_keys)}; remove or "
            "rename those metadata_props entries in the source model"
        )
    if stale:
        log.debug("%s: replacing %d ane.* entries", scan.label, len(stale))
    # Fields after the last metadata-or-lower field stay after the new entries, keeping the
    # serializer's field-number order.
    split = len(scan.fields)
    while split and scan.fields[split - 1].number > pw.MODEL_METADATA_PROPS:
        split -= 1
    head = _runs(scan.fields[:split], stale)
    tail = _runs(scan.fields[split:], stale)
    digest_keys = [p.sha256 for p, _ in payloads] + [KEY_SOURCE_SHA256]
    total = sum(r.end - r.start for r in head + tail if r.keep)
    total += sum(_entry_size(key, len(value)) for key, value in small)
    total += sum(_entry_size(p.b64, base64_length(ref.length)) for p, ref in payloads)
    total += sum(_entry_size(key, 64) for key in digest_keys)
    if total > PROTOBUF_LIMIT:
        raise ContainerError(
            f"{output}: the container would be {total} bytes, over the 2 GiB protobuf limit "
            f"({PROTOBUF_LIMIT} bytes). Move the source's initializers to external data, e.g. "
            "onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True, "
            'location="weights.bin"), and rebuild'
        )
    return _Plan(head, tail, small, payloads, digest_keys, total)


def _safe_location(location: str) -> bool:
    for flavour in (PurePosixPath, PureWindowsPath):
        path = flavour(location)
        if path.is_absolute() or path.anchor or ".." in path.parts:
            return False
    return bool(location)


def _graph_tensors(graph: Any) -> Iterator[Any]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: Any) -> Iterator[Any]:
    for attr in node.attribute:
        if attr.HasField("t"):
            yield attr.t
        yield from attr.tensors
        sparse = list(attr.sparse_tensors)
        if attr.HasField("sparse_tensor"):
            sparse.append(attr.sparse_tensor)
        for item in sparse:
            yield item.values
            yield item.indices
        if attr.HasField("g"):
            yield from _graph_tensors(attr.g)
        for graph in attr.graphs:
            yield from _graph_tensors(graph)


def external_data_locations(source: StrPath) -> list[str]:
    """Locations of every external-data tensor of a model, as written in it.

    Parses the graph with ``onnx.load(..., load_external_data=False)`` (the data files are not
    opened), so the cost grows with the graph; `embed_ane_metadata` calls it only when the
    output goes to another folder.

    Raises:
        ContainerError: The graph cannot be parsed.
        ModelFileError: The model cannot be read.
    """
    import onnx
    from google.protobuf.message import DecodeError  # type: ignore[import-untyped]

    try:
        model = onnx.load(os.fspath(source), load_external_data=False)
    except (DecodeError, ValueError) as exc:
        raise ContainerError(f"{source}: the graph cannot be parsed: {exc}") from exc
    except OSError as exc:
        raise ModelFileError(f"{source}: cannot read: {exc.strerror or exc}") from exc
    tensors: list[Any] = list(_graph_tensors(model.graph))
    for function in model.functions:
        for node in function.node:
            tensors.extend(_node_tensors(node))
    for info in model.training_info:
        tensors.extend(_graph_tensors(info.initialization))
        tensors.extend(_graph_tensors(info.algorithm))
    locations: set[str] = set()
    for tensor in tensors:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            locations.update(str(e.value) for e in tensor.external_data if e.key == "location")
    return sorted(locations)


def _check_external_data(source: Path, output: Path) -> None:
    """Refuse an output in another folder whose external data files would not resolve."""
    source_dir = os.path.realpath(os.path.dirname(os.path.abspath(source)))
    output_dir = os.path.realpath(os.path.dirname(os.path.abspath(output)))
    if source_dir == output_dir:
        return
    locations = external_data_locations(source)
    unsafe = [loc for loc in locations if not _safe_location(loc)]
    if unsafe:
        raise ContainerError(
            f"{source}: external data locations must be relative paths inside the model's "
            f"folder, but the model names {', '.join(map(repr, unsafe))}; re-save the model "
            "with onnx.save(..., save_as_external_data=True, location=NAME)"
        )
    problems = [
        problem
        for loc in locations
        if (problem := _external_file_problem(os.path.join(output_dir, loc), loc))
    ]
    if problems:
        raise ContainerError(
            f"{output}: the model keeps tensors in external data files that would not load next "
            f"to the output: {'; '.join(problems)}. Write the output into {source_dir} (next to "
            f"the source), or copy the data files into {output_dir} (onnx refuses external data "
            "reached through a symbolic or hard link)"
        )


def _external_file_problem(path: str, location: str) -> str | None:
    """What onnx's loader would object to in an external data file, or None."""
    try:
        info = os.lstat(path)
    except OSError:
        return f"{location!r} does not exist"
    if stat.S_ISLNK(info.st_mode):
        return f"{location!r} is a symbolic link"
    if not stat.S_ISREG(info.st_mode):
        return f"{location!r} is not a regular file"
    if info.st_nlink > 1:
        return f"{location!r} has {info.st_nlink} hard links"
    return None


class _Lane:
    """One worker thread running jobs in submission order, with a bound on queued jobs."""

    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._pending: deque[Future[None]] = deque()

    def submit(self, job: Callable[[], None]) -> None:
        """Queue ``job``; first wait while too many are queued, so memory stays bounded."""
        while len(self._pending) >= _MAX_IN_FLIGHT:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(job))

    def drain(self) -> None:
        """Wait for every queued job; re-raise the first failure."""
        while self._pending:
            self._pending.popleft().result()

    def close(self) -> None:
        """Drop the jobs that have not started and stop the worker."""
        for future in self._pending:
            future.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=True)


def _load_sync_file_range() -> Callable[[int, int, int, int], None] | None:
    """Libc's sync_file_range (Linux), raising OSError on failure; None where it is missing."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        func = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    func.restype = ctypes.c_int

    def call(fd: int, offset: int, length: int, flags: int) -> None:
        if func(fd, offset, length, flags) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    return call


_sync_file_range = _load_sync_file_range() if hasattr(os, "fsync") else None
_WRITEBACK_CHUNK = 32 << 20


class _Writer:
    """Hashes on one worker thread and writes on another, while the caller reads and encodes.

    hashlib and file writes release the GIL and base64 encoding does not, so on two cores the
    three overlap. Each lane is a single thread, which keeps hash updates and writes in order.
    """

    def __init__(self, out: BinaryIO, total: int, progress: ProgressCallback | None) -> None:
        self._out = out
        self._total = total
        self._progress = progress
        self._hashing = _Lane("ane-embed-hash")
        self._writing = _Lane("ane-embed-write")
        self.written = 0
        self._flushed = 0

    def put(
        self, data: bytes | bytearray | None, hashes: Sequence[tuple[_Hasher, bytes]] = ()
    ) -> None:
        """Queue ``data`` for writing and each ``(hasher, chunk)`` for hashing."""
        if hashes:
            self._hashing.submit(lambda: self._hash(hashes))
        if data:
            self._writing.submit(lambda: self._write(data))
        if self._progress is not None:
            self._progress(self.written, self._total)

    @staticmethod
    def _hash(hashes: Sequence[tuple[_Hasher, bytes]]) -> None:
        for hasher, chunk in hashes:
            hasher.update(chunk)

    def _write(self, data: bytes | bytearray) -> None:
        self._out.write(data)
        self.written += len(data)
        if self.written - self._flushed >= _WRITEBACK_CHUNK:
            self._start_writeback()

    def _start_writeback(self) -> None:
        """Start writing back what is written so far, so the final fsync has little left to do.

        Without it every byte waits in the page cache until fsync, and the whole output's disk
        time is added after the CPU work instead of overlapping it.
        """
        if _sync_file_range is None:
            return
        try:
            self._out.flush()
            _sync_file_range(self._out.fileno(), self._flushed, self.written - self._flushed, 2)
        except (OSError, ValueError):
            return
        self._flushed = self.written

    def drain(self) -> None:
        """Wait until everything queued is written and hashed."""
        self._hashing.drain()
        self._writing.drain()

    def close(self) -> None:
        """Drop what has not started and stop the workers."""
        self._hashing.close()
        self._writing.close()


def _copy_runs(
    stream: BinaryIO, runs: Iterable[_Run], writer: _Writer, hasher: _Hasher | None, label: str
) -> None:
    for run in runs:
        pos = run.start
        while pos < run.end:
            stream.seek(pos)
            chunk = stream.read(min(_COPY_CHUNK, run.end - pos))
            if not chunk:
                raise ModelFileError(f"{label}: the file shrank while it was being copied")
            pos += len(chunk)
            writer.put(chunk if run.keep else None, [(hasher, chunk)] if hasher else ())


def _binascii_b64encode(raw: bytes) -> bytes:
    return binascii.b2a_base64(raw, newline=False)


@functools.cache
def _b64encoder() -> Callable[[bytes], bytes | bytearray]:
    """The fastest base64 encoder at hand: OpenSSL's ``EVP_EncodeBlock``, else binascii.

    OpenSSL (already loaded by hashlib) encodes about twice as fast, and a ctypes call releases
    the GIL, so encoding overlaps the hashing and writing threads; binascii holds the GIL and
    serializes them. The OpenSSL path is used only after it matched binascii on test vectors.
    """
    import ctypes

    for name in ("libcrypto.so.3", "libcrypto.so.1.1", "libcrypto.3.dylib"):
        try:
            func = ctypes.CDLL(name).EVP_EncodeBlock
        except (OSError, AttributeError):
            continue
        func.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
        func.restype = ctypes.c_int

        def encode(raw: bytes, func: Any = func) -> bytearray:
            # Room for the terminating NUL that EVP_EncodeBlock writes after the text.
            out = bytearray(base64_length(len(raw)) + 1)
            used = func((ctypes.c_char * len(out)).from_buffer(out), raw, len(raw))
            del out[used:]
            return out

        vectors = [b"", b"\x00", b"\xfb\xff", b"abc", bytes(range(256)) * 3 + b"\x01"]
        if all(encode(v) == _binascii_b64encode(v) for v in vectors):
            log.debug("base64 through %s", name)
            return encode
    return _binascii_b64encode


def _raw_chunks(ref: PayloadRef) -> Iterator[bytes]:
    """The payload in chunks whose length is a multiple of 3 (except the last)."""
    carry = b""
    for chunk in ref.iter_chunks(_B64_RAW_CHUNK):
        if carry:
            chunk, carry = carry + chunk, b""
        cut = len(chunk) - len(chunk) % 3
        if cut < len(chunk):
            chunk, carry = chunk[:cut], chunk[cut:]
        if chunk:
            yield chunk
    if carry:
        yield carry


def _digest_of(known: str | None, hasher: _Hasher | None) -> Callable[[], str]:
    """The known digest, or the hasher's once it has seen everything."""
    if known is not None:
        return lambda: known
    if hasher is None:
        raise ContainerError("internal: a payload has neither a known digest nor a hasher")
    return hasher.hexdigest


def _write_container(
    stream: BinaryIO,
    out: BinaryIO,
    plan: _Plan,
    scan: _Scan,
    progress: ProgressCallback | None,
    source_sha256: str | None,
) -> None:
    # Known digests (the build system has hashed every input already) are trusted, not redone.
    source_hash = None if source_sha256 else hashlib.sha256()
    writer = _Writer(out, plan.total, progress)
    try:
        _copy_runs(stream, plan.head, writer, source_hash, scan.label)
        for key, value in plan.small:
            writer.put(_entry_header(key, len(value)) + value)
        digests: list[Callable[[], str]] = []
        for p, ref in plan.payloads:
            hasher = None if ref.sha256 else hashlib.sha256()
            digests.append(_digest_of(ref.sha256, hasher))
            writer.put(_entry_header(p.b64, base64_length(ref.length)))
            encode = _b64encoder()
            for raw in _raw_chunks(ref):
                writer.put(encode(raw), [(hasher, raw)] if hasher else ())
        if source_hash is not None:
            # The tail is hashed now (and copied below) because the source digest precedes it.
            _copy_runs(
                stream,
                [_Run(r.start, r.end, False) for r in plan.tail],
                writer,
                source_hash,
                scan.label,
            )
        writer.drain()
        digests.append(_digest_of(source_sha256, source_hash))
        hexdigests = [digest() for digest in digests]
        for key, digest in zip(plan.digest_keys, hexdigests, strict=True):
            writer.put(_entry_header(key, len(digest)) + digest.encode("ascii"))
        _copy_runs(stream, plan.tail, writer, None, scan.label)
        writer.drain()
    finally:
        writer.close()
    if writer.written != plan.total:
        raise ContainerError(
            f"{scan.label}: wrote {writer.written} bytes but planned {plan.total}; did an input "
            "change while the container was written?"
        )
    if progress is not None:
        progress(plan.total, plan.total)


def _replace_output(target: Path, write: Callable[[BinaryIO, str], _T]) -> _T:
    """`replace_atomically`, with OS errors turned into `ModelFileError` naming the output."""
    try:
        return replace_atomically(target, write)
    except AneError:
        raise
    except OSError as exc:
        raise ModelFileError(
            f"{target}: cannot write: {os_reason(exc)}; nothing was replaced"
        ) from exc


def embed_ane_metadata(
    source: StrPath,
    output: StrPath,
    *,
    microcode: PayloadRef,
    td_size: int,
    td_count: int,
    weights: PayloadRef | None = None,
    tile_descriptors: PayloadRef | None = None,
    toolchain: str | None = None,
    io: Mapping[int, IoSlot] | None = None,
    tiles: Mapping[int, int] | None = None,
    progress: ProgressCallback | None = None,
    source_sha256: str | None = None,
) -> AneModelMetadata:
    """Write ``output``: ``source`` with its ``ane.*`` metadata replaced by the given payloads.

    Streams: the source's top-level fields are copied verbatim in chunks (the graph is never
    parsed), stale ``ane.*`` entries are dropped, foreign entries kept, and the new entries are
    base64-encoded in chunks, so memory does not grow with model or payload size. The output is
    written to a temp file beside it, fsynced and renamed into place; nothing is left behind on
    failure. ``output`` may equal ``source``.

    Args:
        source: The ONNX model (may already be a container).
        output: Where the container goes.
        microcode: The task descriptor chain (``ane.microcode.b64``), non-empty.
        td_size: Size of the first descriptor: a positive multiple of 4.
        td_count: Number of descriptors, 1 to 65535.
        weights: Kernel weights (``ane.weights.b64``), if any.
        tile_descriptors: Separate descriptor payload (``ane.tile_descriptors.b64``), if any.
        toolchain: Free text naming the compiler.
        io: Per-slot tensors (``ane.io``).
        tiles: BO size in bytes per slot (``ane.tiles``).
        progress: Called with (bytes written, total bytes) as the output grows.
        source_sha256: The source file's digest when already known (as for payloads with a
            `PayloadRef.sha256`); it is trusted instead of hashing the source again.

    Returns:
        The metadata of the written container, read back from it.

    Raises:
        ContainerError: Invalid arguments, or a container the kernel or ONNX would reject (a key
            of 64 bytes or more, over 2 GiB, external data that would not resolve). Checked
            before anything is written.
        ModelFileError: A file cannot be read or written.
        WireFormatError: The source is not a valid ONNX protobuf.
        ArtifactError: A payload file cannot be read.
    """
    source_path, output_path = Path(source), Path(output)
    small = _embed_values(microcode, td_size, td_count, toolchain, io, tiles)
    payloads = [
        (keys, ref)
        for keys, ref in zip(_PAYLOADS, (microcode, weights, tile_descriptors), strict=True)
        if ref is not None
    ]
    with _open_model(source_path) as (stream, label):
        scan = _scan(stream, label)
        plan = _plan(scan, small, payloads, output_path)
        _check_external_data(source_path, output_path)

        def write(out: BinaryIO, tmp: str) -> AneModelMetadata:
            _write_container(stream, out, plan, scan, progress, source_sha256)
            out.flush()
            with open(tmp, "rb") as written:
                # Read back what was written, under the name it is about to get.
                return _metadata_from_scan(_scan(written, os.fspath(output)), written)

        metadata = _replace_output(output_path, write)
    log.info(
        "%s: wrote %d bytes (microcode %d, weights %d bytes) from %s",
        output_path,
        plan.total,
        metadata.microcode_len,
        metadata.weights_len,
        source_path,
    )
    return metadata
