"""``manifest.json``: what a split folder holds, read back with one clear line per problem.

The manifest records the checkpoint (folder, files, digest), the model's shape, the settings and
the plan (every program in order with its graph, container, tensor names and shapes). The runtime
and the build read it; only `split` writes it, last, so a folder with a manifest is complete.
This module must not build graphs or run programs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from .._fs import write_atomic
from ._validate import validate
from .errors import ManifestError
from .plan import ChunkPlan, SplitPlan, Variant
from .spec import LlamaSpec

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = 1


class CheckpointInfo(BaseModel):
    """The checkpoint a split was made from.

    Attributes:
        directory: Its folder, as given to the split.
        files: The files the digest covers, in order (config first, then the shards).
        sha256: Digest over those files' names, sizes and bytes.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    directory: str
    files: tuple[str, ...]
    sha256: str


class Manifest(BaseModel):
    """A split folder's description.

    Attributes:
        format: Manifest format version.
        checkpoint: Where the weights came from.
        spec: The model's shape.
        plan: The programs, in run order, with the settings they were made for.
        notes: Plain statements about what runs where.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal[1] = 1
    checkpoint: CheckpointInfo
    spec: LlamaSpec
    plan: SplitPlan
    notes: tuple[str, ...] = ()

    @property
    def context(self) -> int:
        """Positions the KV caches hold."""
        return self.plan.settings.context

    @property
    def chunks(self) -> tuple[ChunkPlan, ...]:
        """Every program, in order."""
        return self.plan.chunks

    def program(self, name: str) -> ChunkPlan:
        """The program called ``name``.

        Raises:
            ManifestError: There is none.
        """
        for chunk in self.chunks:
            if chunk.name == name:
                return chunk
        raise ManifestError(f"{MANIFEST_FILE}: no program {name!r}")

    def blocks(self, variant: Variant) -> list[ChunkPlan]:
        """The block programs of one variant, in layer order (empty: no such variant)."""
        found = [c for c in self.chunks if c.kind == "block" and c.variant == variant]
        return sorted(found, key=lambda c: c.layers or (0, 0))

    def heads(self) -> list[ChunkPlan]:
        """The head programs, in vocabulary order."""
        return sorted((c for c in self.chunks if c.kind == "head"), key=lambda c: c.vocab or (0, 0))

    def embed(self) -> ChunkPlan:
        """The embedding program."""
        return self.program("embed")

    def ane_programs(self) -> Iterable[ChunkPlan]:
        """The programs meant to run as ANE programs."""
        return (c for c in self.chunks if c.on_ane)


def read_manifest(directory: Path) -> Manifest:
    """Read and check ``directory/manifest.json``.

    Raises:
        ManifestError: Missing, unreadable, not JSON, or not a manifest (one line per problem,
            naming the key and the value).
    """
    path = Path(directory) / MANIFEST_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ManifestError(
            f"{path}: no manifest: not a split folder (make one with `ane-build llm split`)"
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}: invalid JSON: {exc}") from exc
    return validate(Manifest, data, str(path), ManifestError)


def write_manifest(directory: Path, manifest: Manifest) -> Path:
    """Write ``directory/manifest.json`` atomically; return its path."""
    path = Path(directory) / MANIFEST_FILE
    write_atomic(path, (manifest.model_dump_json(indent=1) + "\n").encode("utf-8"))
    return path
