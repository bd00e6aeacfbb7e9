"""Low-level reading of a container file: top-level fields and metadata entries, located.

Reads only tags, lengths and the small values it is asked for; it must not parse the graph.
"""

from __future__ import annotations

import io
import logging
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO, TypeAlias

from .._typing import BytesLike, StrPath
from ..errors import (
    AneError,
    MetadataError,
    ModelFileError,
    WireFormatError,
)
from ..formats import protowire as pw
from .keys import ANE_KEY_PREFIX, SMALL_VALUE_LIMIT

log = logging.getLogger(__name__)

_READ_BUFFER = 16 << 10
_B64_TEXT_CHUNK = 4 << 20
_KEY_READ_LIMIT = 4096
# Entries up to this size are read whole and scanned in memory; larger ones hold a payload.
_SMALL_ENTRY = 4096


@dataclass(frozen=True)
class Entry:
    """One metadata entry: its key and where its value lies in the file."""

    key: str
    key_size: int
    field: pw.WireField
    value_offset: int
    value_length: int


@dataclass(frozen=True)
class Scan:
    """A container's top-level fields and metadata entries, located but not read."""

    label: str
    size: int
    fields: tuple[pw.WireField, ...]
    entries: tuple[Entry, ...]

    @property
    def has_graph(self) -> bool:
        """Whether the model has a graph (field 7)."""
        return any(f.number == pw.MODEL_GRAPH for f in self.fields)

    def ane_entries(self) -> dict[str, Entry]:
        """The ``ane.*`` entries by key; the last of a repeated key wins, as in a map."""
        # protobuf semantics would keep both; the last one wins like a map, and checks flag it.
        return {e.key: e for e in self.entries if e.key.startswith(ANE_KEY_PREFIX)}

    def keys(self) -> tuple[str, ...]:
        """Every metadata key, in file order."""
        return tuple(entry.key for entry in self.entries)

    def duplicate_keys(self) -> list[str]:
        """Keys that appear more than once, in order of their second appearance."""
        seen: set[str] = set()
        dups: list[str] = []
        for entry in self.entries:
            if entry.key in seen and entry.key not in dups:
                dups.append(entry.key)
            seen.add(entry.key)
        return dups


# What a container can be read from: a path, its bytes, or a seekable binary stream.
ModelSource: TypeAlias = StrPath | BytesLike | BinaryIO


def label_of(model: ModelSource) -> str:
    """How messages name a model: its path, ``<bytes>``, or the stream's name."""
    if isinstance(model, bytes | bytearray | memoryview):
        return "<bytes>"
    if isinstance(model, str | os.PathLike):
        return os.fspath(model)
    name = getattr(model, "name", None)
    return name if isinstance(name, str) else "<stream>"


@contextmanager
def open_model(model: ModelSource) -> Iterator[tuple[BinaryIO, str]]:
    """Open a model path (or wrap bytes, or use a stream as is); OS errors become `ModelFileError`.

    A stream is neither closed nor rewound afterwards: it belongs to the caller.
    """
    if isinstance(model, bytes | bytearray | memoryview):
        yield io.BytesIO(model), "<bytes>"
        return
    if not isinstance(model, str | os.PathLike):
        yield model, label_of(model)
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
        raise ModelFileError(f"{label}: cannot open: {exc.strerror or exc}", exc.errno) from exc
    with stream:
        try:
            yield stream, label
        except AneError:
            raise
        except OSError as exc:
            raise ModelFileError(f"{label}: cannot read: {exc.strerror or exc}", exc.errno) from exc


def read_entry(stream: BinaryIO, top: pw.WireField) -> Entry:
    """Locate one metadata entry's key and value (the key is read, the value is not)."""
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
        return Entry(key, key_size, top, top.end, 0)
    return Entry(key, key_size, top, base + value_field.value_offset, value_field.length)


def scan_container(stream: BinaryIO, label: str) -> Scan:
    """Read the top-level fields and the metadata entries' keys; values are located, not read."""
    size = pw.file_size(stream)
    fields: list[pw.WireField] = []
    entries: list[Entry] = []
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
                    entries.append(read_entry(stream, top))
    except WireFormatError as exc:
        raise WireFormatError(f"{label}: not a valid ONNX protobuf: {exc}") from exc
    return Scan(label, size, tuple(fields), tuple(entries))


def show(text: str | bytes, limit: int = 80) -> str:
    """A value quoted for a message, shortened to ``limit`` characters."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return repr(text if len(text) <= limit else text[:limit] + "...")


def bad_value(label: str, key: str, value: str | bytes | None, reason: str) -> MetadataError:
    """A `MetadataError` naming the file, the key, the value and what is wrong with it."""
    shown = "" if value is None else f" = {show(value)}"
    return MetadataError(f"{label}: {key}{shown}: {reason}")


def read_text(stream: BinaryIO, label: str, entry: Entry) -> str:
    """Read a small value as UTF-8 text; refuse one too large to be one of ours."""
    if entry.value_length > SMALL_VALUE_LIMIT:
        raise bad_value(
            label,
            entry.key,
            None,
            f"value is {entry.value_length} bytes; at most {SMALL_VALUE_LIMIT} are expected",
        )
    raw = pw.read_range(stream, entry.value_offset, entry.value_length)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad_value(label, entry.key, raw, "not valid UTF-8") from exc


def iter_range(
    stream: BinaryIO, start: int, length: int, chunk: int = _B64_TEXT_CHUNK
) -> Iterator[bytes]:
    """Yield ``length`` bytes of the stream from ``start`` in chunks."""
    pos, end = start, start + length
    while pos < end:
        data = pw.read_range(stream, pos, min(chunk, end - pos))
        pos += len(data)
        yield data
