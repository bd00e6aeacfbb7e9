"""`ResolvedArtifacts`: everything needed to write one container, with where each value came from.

Definitions only; resolution lives in `resolve`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..formats.payload import IoSlot, PayloadRef


@dataclass(frozen=True)
class ResolvedArtifacts:
    """Everything needed to write one container, with where each value came from.

    Attributes:
        microcode: The task descriptor chain (``tsk``).
        td_size: Size of the first descriptor.
        td_count: Number of descriptors.
        weights: Kernel weights, if any.
        tile_descriptors: Separate descriptor payload, if the toolchain emitted one.
        io: Per-slot tensors (``ane.io``), keyed by slot.
        tiles: BO size in bytes per slot (``ane.tiles``), keyed by slot.
        toolchain: Free text naming the compiler.
        notes: Human-readable lines on what was discovered or inferred.
        inputs: Every file the result was read from (for dependency tracking).
    """

    microcode: PayloadRef
    td_size: int
    td_count: int
    weights: PayloadRef | None = None
    tile_descriptors: PayloadRef | None = None
    io: dict[int, IoSlot] = field(default_factory=dict)
    tiles: dict[int, int] = field(default_factory=dict)
    toolchain: str | None = None
    notes: tuple[str, ...] = ()
    inputs: tuple[Path, ...] = ()
