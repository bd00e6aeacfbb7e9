"""The ``ane.*`` keys of a container and the limits their values live under.

Names and constants only; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..driver.uapi import (
    ONNX_KEY_LIMIT,
)

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
# Empty; present only to make a container's length even (see `writer`); every reader ignores it.
KEY_PAD = "ane.pad"
ANE_KEY_PREFIX = "ane."
REQUIRED_KEYS = (KEY_MICROCODE, KEY_TD_SIZE, KEY_TD_COUNT)
CONTAINER_FORMAT = "1"

# The fork kernel reads td_size/td_count as decimal strings shorter than this (DESIGN section 3).
# protobuf refuses to parse or serialize a message of 2 GiB or more.
PROTOBUF_LIMIT = 2**31 - 1
# Values other than payloads are read whole; a bound keeps a hostile file from making them huge.
SMALL_VALUE_LIMIT = 1 << 20


@dataclass(frozen=True)
class PayloadKeys:
    """One payload's keys: its name, base64 key and digest key; whether the kernel reads it."""

    name: str
    b64: str
    sha256: str
    kernel: bool


MICROCODE = PayloadKeys("microcode", KEY_MICROCODE, KEY_MICROCODE_SHA256, kernel=True)
WEIGHTS = PayloadKeys("weights", KEY_WEIGHTS, KEY_WEIGHTS_SHA256, kernel=True)
TILE_DESCRIPTORS = PayloadKeys(
    "tile_descriptors", KEY_TILE_DESCRIPTORS, KEY_TILE_DESCRIPTORS_SHA256, kernel=False
)
PAYLOADS = (MICROCODE, WEIGHTS, TILE_DESCRIPTORS)


def kernel_accepts_key(key: str) -> bool:
    """Whether the fork kernel accepts a metadata key of this name (fewer than 64 UTF-8 bytes)."""
    return len(key.encode("utf-8")) < ONNX_KEY_LIMIT


def base64_length(size: int) -> int:
    """Length of the padded base64 text of ``size`` bytes."""
    return 4 * ((size + 2) // 3)
