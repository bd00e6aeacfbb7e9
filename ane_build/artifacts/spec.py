"""Where a model's compiler artefacts are: the ``[artifacts]`` table of a config, and the flags.

Shape and validation only; resolving the paths and reading the files is `resolve`'s job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..driver.uapi import ANE_TILE_COUNT, PAGE_SIZE, round_up
from ..errors import AneFormatError
from ..formats.anec import ANEC_HEADER_SIZE, ANEC_PAYLOAD_OFFSET
from ..formats.payload import IoSlot
from ..formats.tiling import strides

# Slots 0 and 1 are the kernel's (bootstrap and program); tensors use the others.
FIRST_TENSOR_SLOT = 2

PayloadName = Literal["microcode", "weights", "tile_descriptors"]
PAYLOAD_NAMES: tuple[PayloadName, ...] = ("microcode", "weights", "tile_descriptors")

# How to set each value, for error messages: (command-line flag, config key).
SETTINGS: dict[str, tuple[str, str]] = {
    "root": ("--artifact-root DIR", "artifacts.root"),
    "microcode": ("--microcode FILE", "artifacts.microcode"),
    "weights": ("--weights FILE", "artifacts.weights"),
    "tile_descriptors": ("--tile-descriptors FILE", "artifacts.tile_descriptors"),
    "anec": ("--anec FILE", "artifacts.anec"),
    "bundle": ("--bundle PATH", "artifacts.bundle"),
    "td_size": ("--td-size N", "artifacts.td_size"),
    "td_count": ("--td-count N", "artifacts.td_count"),
    "overrides": ("--override NAME", "artifacts.overrides"),
    "skip_validation": ("--skip-validation", "artifacts.skip_validation"),
    "io": ("", "artifacts.io"),
}


def how_to_set(key: str) -> str:
    """Return e.g. ``"--microcode FILE (config key artifacts.microcode)"`` for a spec field."""
    flag, config_key = SETTINGS[key]
    return f"{flag} (config key {config_key})" if flag else f"config key {config_key}"


class TensorSlot(BaseModel):
    """One tensor slot as people declare it: strides default to the ANE layout of the shape."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["input", "output", "scratch"]
    name: str | None = None
    n: int = Field(default=1, ge=1)
    c: int = Field(ge=1)
    h: int = Field(default=1, ge=1)
    w: int = Field(default=1, ge=1)
    row_stride: int | None = Field(default=None, gt=0)
    plane_stride: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _strides_hold_the_tensor(self) -> TensorSlot:
        try:
            strides(self.h, self.w, self.row_stride, self.plane_stride)
        except AneFormatError as exc:
            raise ValueError(str(exc)) from exc
        return self

    def io_slot(self) -> IoSlot:
        """The slot as ``ane.io`` stores it, with every stride filled in."""
        row, plane = strides(self.h, self.w, self.row_stride, self.plane_stride)
        return IoSlot(
            role=self.role,
            name=self.name,
            n=self.n,
            c=self.c,
            h=self.h,
            w=self.w,
            row_stride=row,
            plane_stride=plane,
        )

    def buffer_size(self) -> int:
        """BO bytes the tensor needs with its strides (a whole number of pages)."""
        _, plane = strides(self.h, self.w, self.row_stride, self.plane_stride)
        return round_up(self.n * self.c * plane, PAGE_SIZE)


def check_slots(slots: dict[int, TensorSlot] | None) -> dict[int, TensorSlot] | None:
    """Validate the slot numbers of an ``io`` table (a pydantic validator body)."""
    for slot in slots or {}:
        if not FIRST_TENSOR_SLOT <= slot < ANE_TILE_COUNT:
            raise ValueError(
                f"slot {slot}: tensor slots are {FIRST_TENSOR_SLOT} to {ANE_TILE_COUNT - 1} "
                "(0 and 1 are the kernel's)"
            )
    return slots


class ArtifactSpec(BaseModel):
    """Where a model's compiler artefacts are; the ``[artifacts]`` table of a config.

    Relative paths are resolved against the project root given to `resolve_artifacts`.

    Attributes:
        root: Folder to search for artefacts that are not given explicitly.
        anec: An ``.anec``/``.ane`` file.
        bundle: A JSON bundle file, or a folder holding ``bundle.json``.
        microcode: The microcode (``*.tsk``).
        tile_descriptors: A separate tile descriptor payload.
        weights: The weights.
        td_size: Size of the first task descriptor in bytes.
        td_count: Number of task descriptors.
        anec_payload_offset: Payload offset of ``.anec`` files (0x800 for an older library).
        overrides: Payloads given as files that replace the ``.anec``'s or the bundle's own
            (without it, giving both is an error naming both).
        skip_validation: Do not check the descriptor chain against td_size/td_count (for
            programs whose chains this tool does not understand); the kernel's rules still hold.
        io: Tensor slots by slot number, for artefacts that do not carry them (an ``.anec``
            file does): what the program reads and writes, so it can be run and checked.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    root: Path | None = None
    anec: Path | None = None
    bundle: Path | None = None
    microcode: Path | None = None
    tile_descriptors: Path | None = None
    weights: Path | None = None
    td_size: int | None = Field(default=None, gt=0)
    td_count: int | None = Field(default=None, gt=0)
    anec_payload_offset: int = Field(default=ANEC_PAYLOAD_OFFSET, ge=ANEC_HEADER_SIZE)
    overrides: tuple[PayloadName, ...] = ()
    skip_validation: bool = False
    io: dict[int, TensorSlot] | None = None

    @field_validator("td_size", "td_count", "anec_payload_offset", mode="before")
    @classmethod
    def _no_bool(cls, value: object) -> object:
        # TOML `true` would otherwise slip through as the integer 1.
        if isinstance(value, bool):
            raise ValueError("expected an integer, found a boolean")
        return value

    @field_validator("io", mode="after")
    @classmethod
    def _slots(cls, value: dict[int, TensorSlot] | None) -> dict[int, TensorSlot] | None:
        return check_slots(value)
