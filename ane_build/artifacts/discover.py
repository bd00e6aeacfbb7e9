"""Find compiler artefacts under a folder by name: which files could be which payload.

Lists candidates only; choosing between them (and refusing to guess) is `resolve`'s job.
"""

from __future__ import annotations

import fnmatch
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from .._fs import os_problem
from .._typing import StrPath
from ..errors import ArtifactError
from .bundle import BUNDLE_FILE

logger = logging.getLogger(__name__)

# Discovery never descends further than this below the root (the root itself is depth 0).
DISCOVERY_MAX_DEPTH = 4
# Kinds in priority order: a file is classified by the first kind whose pattern it matches.
# The second half of each tuple is the seed's own suffixes (DESIGN §3), so its trees are found.
DISCOVERY_PATTERNS: dict[str, tuple[str, ...]] = {
    "bundle": (BUNDLE_FILE,),
    "anec": ("*.anec", "*.ane"),
    "microcode": ("*.tsk", "*.microcode", "*.tsk.bin", "*.microcode.bin"),
    "tile_descriptors": (
        "*tile_desc*.bin",
        "*.td.bin",
        "*.tile_descriptors.bin",
        "*.tiledesc.bin",
        "*.tds",
        "*.ane.td",
    ),
    "weights": ("*weights*.bin", "*.weights", "*.aneweights", "*.aneweights.bin"),
}
# Editor backups and half-written files (ours and other tools') are never artefacts.
IGNORED_SUFFIXES = (".tmp", ".part", ".partial", ".swp", "~")


def _ignored(name: str) -> bool:
    return name.startswith((".", "~")) or name.endswith(IGNORED_SUFFIXES) or ".tmp." in name


def classify(name: str) -> str | None:
    """The payload kind a file name suggests (see `DISCOVERY_PATTERNS`), or None."""
    lowered = name.lower()
    for kind, patterns in DISCOVERY_PATTERNS.items():
        if any(fnmatch.fnmatchcase(lowered, p) for p in patterns):
            return kind
    return None


def _walk(root: Path, visited: list[Path] | None = None) -> Iterator[Path]:
    def on_error(exc: OSError) -> None:
        logger.warning("artefact discovery skips %s: %s", exc.filename, exc.strerror)

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error):
        if visited is not None:
            visited.append(Path(dirpath))
        depth = len(Path(dirpath).relative_to(root).parts)
        # Pruning in place keeps os.walk out of hidden folders and below the depth limit;
        # os.walk does not follow symlinked folders, so loops cannot trap it.
        dirnames[:] = (
            []
            if depth >= DISCOVERY_MAX_DEPTH
            else sorted(d for d in dirnames if not _ignored(d) and d != "__pycache__")
        )
        for name in filenames:
            if not _ignored(name):
                yield Path(dirpath) / name


def discover_candidates(
    root: StrPath, *, visited: list[Path] | None = None
) -> dict[str, list[Path]]:
    """List artefact candidates under ``root``, per kind, sorted.

    Kinds and patterns are `DISCOVERY_PATTERNS`; the search goes `DISCOVERY_MAX_DEPTH` levels
    deep and skips hidden and temporary files. Every kind is present in the result. Folders
    searched are appended to ``visited`` when given (a change to any of them can change the
    result).

    Raises:
        ArtifactError: ``root`` is missing or not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        try:
            os.stat(root)
        except OSError as exc:
            # Missing, a dangling symlink or a symlink loop: say which.
            raise ArtifactError(f"artefact root {root}: {os_problem(root, exc)}") from exc
        raise ArtifactError(f"artefact root {root}: is not a folder")
    found: dict[str, list[Path]] = {kind: [] for kind in DISCOVERY_PATTERNS}
    for path in _walk(root, visited):
        kind = classify(path.name)
        if kind is not None:
            found[kind].append(path)
    return {kind: sorted(paths) for kind, paths in found.items()}


def patterns(kind: str) -> str:
    """The file patterns of one kind, for messages."""
    return ", ".join(DISCOVERY_PATTERNS[kind])
