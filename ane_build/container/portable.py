r"""Portability: what the fork kernel accepts but other readers of containers refuse.

The seed's Python readers (``asahi_ane_llm``) want padded standard base64 without line breaks and
plain decimal numbers, and look keys up exactly; the kernel is more lenient (both alphabets,
whitespace, missing padding, ``+4`` or ``4\n``, keys compared as C strings). What we write is
always portable; this finds the containers others wrote that are not. Reads values in chunks and
never decodes; no writes, no devices.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import BinaryIO

from ..errors import MetadataError
from .keys import (
    KEY_MICROCODE,
    KEY_TD_COUNT,
    KEY_TD_SIZE,
    KEY_TILE_DESCRIPTORS,
    KEY_WEIGHTS,
)
from .scan import Entry, iter_range, read_text

_STANDARD = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_NOT_STANDARD = re.compile(rb"[^A-Za-z0-9+/]")
_PLAIN_DECIMAL = re.compile(r"[0-9]+")
_KERNEL_KEYS = (KEY_MICROCODE, KEY_WEIGHTS, KEY_TD_SIZE, KEY_TD_COUNT)


def _base64_problem(stream: BinaryIO, entry: Entry) -> str | None:
    """Why a base64 value is not padded standard base64 on one line; None when it is."""
    if entry.value_length % 4:
        return f"{entry.value_length} characters, not a multiple of 4 (unpadded or wrapped)"
    offset = 0
    for chunk in iter_range(stream, entry.value_offset, entry.value_length):
        odd = chunk.translate(None, _STANDARD)
        if odd:
            first = _NOT_STANDARD.search(chunk)
            at = offset + (first.start() if first else 0)
            tail = entry.value_length - at
            if not (odd.strip(b"=") == b"" and tail <= 2 and tail == len(odd)):
                byte = chunk[at - offset : at - offset + 1]
                return f"byte {byte!r} at value offset {at} (only A-Z a-z 0-9 + / and final '=')"
        offset += len(chunk)
    return None


def problems(
    stream: BinaryIO, label: str, ane: Mapping[str, Entry], keys: Iterator[str] | tuple[str, ...]
) -> list[tuple[str, str]]:
    """Each portability problem as (check name, detail).

    Args:
        stream: The container.
        label: How messages name it.
        ane: The ``ane.*`` entries by key (last one wins).
        keys: Every metadata key as read (for keys the kernel matches only as C strings).
    """
    found: list[tuple[str, str]] = []
    for key in (KEY_MICROCODE, KEY_WEIGHTS, KEY_TILE_DESCRIPTORS):
        if key in ane:
            problem = _base64_problem(stream, ane[key])
            if problem:
                found.append((f"portable: {key}", problem))
    for key in (KEY_TD_SIZE, KEY_TD_COUNT):
        if key in ane:
            try:
                text = read_text(stream, label, ane[key])
            except MetadataError as exc:
                found.append((f"portable: {key}", str(exc)))
                continue
            if not _PLAIN_DECIMAL.fullmatch(text):
                found.append((f"portable: {key}", f"{text!r} is not plain decimal digits"))
    for key in keys:
        base = key.split("\0", 1)[0]
        if base != key and base in _KERNEL_KEYS:
            shown = repr(key)
            found.append(
                (f"portable: {base}", f"the key {shown} matches only as a C string, as the kernel")
            )
    return found
