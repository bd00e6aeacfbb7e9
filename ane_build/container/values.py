"""The rules for our metadata values: descriptor numbers, digests, ``ane.io``, ``ane.tiles``.

Pure functions over text; no I/O.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import ValidationError

from ..driver.kernel_onnx import parse_decimal as kernel_decimal
from ..driver.uapi import ANE_TILE_COUNT
from ..errors import KernelRejection
from ..formats.payload import IoSlot
from .keys import KEY_IO, KEY_TILES
from .scan import bad_value

_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")


def parse_decimal(text: str, key: str, label: str) -> int:
    """Parse ``td_size``/``td_count`` with the kernel's ``kstrtou32`` rules; zero is refused too.

    Raises:
        MetadataError: The kernel would refuse the value (names the key, the value and why).
    """
    try:
        value = kernel_decimal(text.encode("utf-8"))
    except KernelRejection as exc:
        raise bad_value(label, key, text, str(exc)) from exc
    if value == 0:
        raise bad_value(label, key, text, "must not be zero (the kernel rejects it)")
    return value


def parse_digest(text: str, key: str, label: str) -> str:
    """Check a sha256 digest value (64 lowercase hex digits)."""
    if not _HEX_DIGEST.fullmatch(text):
        raise bad_value(label, key, text, "not a sha256 digest (64 lowercase hex digits)")
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
        raise bad_value(label, key, text, "invalid JSON: nested too deeply") from exc
    except ValueError as exc:
        raise bad_value(label, key, text, f"invalid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise bad_value(label, key, text, "expected a JSON object keyed by slot number")
    return obj


def _parse_slot(name: str, key: str, label: str, text: str) -> int:
    # The length bound comes first: int() of a huge digit string is slow, then refused.
    if not (name.isascii() and name.isdigit() and len(name) <= 2 and int(name) < ANE_TILE_COUNT):
        raise bad_value(
            label,
            key,
            text,
            f"slot key {name!r}: slot keys are decimal numbers from 0 to {ANE_TILE_COUNT - 1}",
        )
    return int(name)


def parse_io(text: str, label: str) -> dict[int, IoSlot]:
    """Parse ``ane.io``: a JSON object of slot number to tensor."""
    slots: dict[int, IoSlot] = {}
    for name, value in _json_object(text, KEY_IO, label).items():
        slot = _parse_slot(name, KEY_IO, label, text)
        try:
            slots[slot] = IoSlot.model_validate(value)
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(p) for p in problem["loc"])
            raise bad_value(
                label, KEY_IO, text, f"slot {slot}: {where or 'value'}: {problem['msg']}"
            ) from exc
    return dict(sorted(slots.items()))


def parse_tiles(text: str, label: str) -> dict[int, int]:
    """Parse ``ane.tiles``: a JSON object of slot number to BO size in bytes."""
    tiles: dict[int, int] = {}
    for name, value in _json_object(text, KEY_TILES, label).items():
        slot = _parse_slot(name, KEY_TILES, label, text)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise bad_value(
                label, KEY_TILES, text, f"slot {slot}: BO size must be a byte count >= 0"
            )
        tiles[slot] = value
    return dict(sorted(tiles.items()))
