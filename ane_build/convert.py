"""One conversion: resolve a model's compiler artefacts and write its ``_ane.onnx`` container.

The single entry point shared by the converter CLI, the doit tasks and watch mode. It must not
print (callers report `ConvertResult`), and it never leaves a partial output behind.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import overload

from .artifacts import ArtifactSpec, resolve_artifacts
from .artifacts.types import ResolvedArtifacts
from .container import AneModelMetadata, embed_ane_metadata, parse_ane_metadata
from .errors import BuildError
from .formats.payload import PayloadRef

log = logging.getLogger(__name__)

OUTPUT_SUFFIX = "_ane.onnx"


@dataclass(frozen=True)
class ConvertResult:
    """What one conversion produced."""

    source: Path
    output: Path
    metadata: AneModelMetadata
    artifacts: ResolvedArtifacts
    elapsed: float

    def summary(self) -> list[str]:
        """Human lines: what was discovered and inferred, and what was written."""
        meta = self.metadata
        return [
            *self.artifacts.notes,
            f"wrote {self.output} ({self.output.stat().st_size:,} bytes): microcode "
            f"{meta.microcode_len} B, weights {meta.weights_len} B, td_size=0x{meta.td_size:x}, "
            f"td_count={meta.td_count}, in {self.elapsed:.2f} s",
        ]


@overload
def _with_digest(ref: PayloadRef, known: Mapping[Path, str]) -> PayloadRef: ...
@overload
def _with_digest(ref: None, known: Mapping[Path, str]) -> None: ...
def _with_digest(ref: PayloadRef | None, known: Mapping[Path, str]) -> PayloadRef | None:
    """``ref`` with its digest filled in when it is a whole file whose digest is known."""
    if ref is None or ref.path is None or ref.offset or ref.sha256:
        return ref
    digest = known.get(ref.path.absolute())
    try:
        whole = ref.length == ref.path.stat().st_size
    except OSError:
        return ref
    return replace(ref, sha256=digest) if digest and whole else ref


def default_output(source: Path) -> Path:
    """``<model>_ane.onnx`` next to the model."""
    return source.with_name(source.stem + OUTPUT_SUFFIX)


def convert_model(
    source: Path,
    spec: ArtifactSpec,
    *,
    output: Path | None = None,
    toolchain: str | None = None,
    base_dir: Path | None = None,
    allow_outside: bool = True,
    progress: Callable[[int, int], None] | None = None,
    known_digests: Mapping[Path, str] | None = None,
) -> ConvertResult:
    """Embed the artefacts ``spec`` resolves to into a copy of ``source``.

    Args:
        source: The source ONNX model.
        spec: Where the artefacts are (explicit paths, bundle, .anec, discovery root).
        output: Where to write; defaults to `default_output`.
        toolchain: Free text recorded as ``ane.toolchain`` (the bundle's value otherwise).
        base_dir: Folder relative artefact paths resolve against (cwd when None).
        allow_outside: Whether artefact paths may lie outside ``base_dir``.
        progress: Called with (bytes done, bytes total) while writing.
        known_digests: sha256 of input files the caller has already hashed (the build system);
            whole-file payloads and the source then skip hashing.

    Raises:
        AneError: Artefacts missing/ambiguous/contradictory, a bad source, or a failed write.
    """
    start = time.perf_counter()
    output = default_output(source) if output is None else output
    # realpath, not Path.resolve: resolve raises RuntimeError on a symlink loop, and the
    # loop is better reported by the open that follows (naming the file).
    if os.path.realpath(output) == os.path.realpath(source):
        raise BuildError(f"{output}: the output would overwrite the source model")
    artifacts = resolve_artifacts(
        spec, base_dir=base_dir, toolchain=toolchain, allow_outside=allow_outside
    )
    for note in artifacts.notes:
        log.info("%s: %s", source.name, note)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BuildError(f"{output.parent}: cannot create the folder: {exc.strerror}") from exc
    known = {Path(p).absolute(): d for p, d in (known_digests or {}).items()}
    written = embed_ane_metadata(
        source,
        output,
        microcode=_with_digest(artifacts.microcode, known),
        td_size=artifacts.td_size,
        td_count=artifacts.td_count,
        weights=_with_digest(artifacts.weights, known),
        tile_descriptors=_with_digest(artifacts.tile_descriptors, known),
        toolchain=artifacts.toolchain,
        io=artifacts.io,
        tiles=artifacts.tiles,
        progress=progress,
        source_sha256=known.get(source.absolute()),
    )
    # Parse back what landed on disk: the container must read as what we meant to write.
    parsed = parse_ane_metadata(output)
    if parsed != written:
        raise BuildError(f"{output}: metadata read back differs from what was written")
    return ConvertResult(source, output, parsed, artifacts, time.perf_counter() - start)
