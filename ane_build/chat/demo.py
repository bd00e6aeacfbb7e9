"""The bundled tiny demo, built on first use for either backend.

``ort`` needs the tiny random-weight export (`ensure_tiny_llama`). ``ane`` also needs its split
(`split_checkpoint` of the checkpoint written beside the export, from the same weights) and a
container per ANE chunk; without a compiler here, those hold synthetic programs (not real ANE
code) and run on the simulator, which computes each chunk's outputs from its graph. Each part is
reused when it is up to date. This module must not run the model.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from ..llm.plan import SplitSettings
from ..llm.simcompile import compile_synthetic
from ..llm.split import split_checkpoint
from .tiny import ensure_tiny_llama

log = logging.getLogger(__name__)

#: Two block chunks (the tiny model would fit in one) so the demo shows several programs.
DEMO_SPLIT = SplitSettings(chunks=2, context=512, prefill=32)
CHUNKS_DIR = "chunks"


def ensure_demo(root: Path, backend: Literal["ane", "ort"]) -> tuple[Path, list[str]]:
    """Build what the demo needs under ``root``; return the folder to load and what was done.

    Raises:
        AneError: A step failed (nothing half-written is left).
    """
    root = Path(root)
    notes = ["built the tiny model" if ensure_tiny_llama(root) else "tiny model up to date"]
    if backend == "ort":
        return root, notes
    split = split_checkpoint(root, root / CHUNKS_DIR, DEMO_SPLIT)
    notes.append("split up to date" if split.reused else f"split into {root / CHUNKS_DIR}")
    written = compile_synthetic(root / CHUNKS_DIR)
    if written:
        notes.append(f"packaged {len(written)} chunk container(s) with synthetic programs")
    return root / CHUNKS_DIR, notes
