"""Resolving a project's configured paths: absolute, symlinks followed, shown relative to the root.

One home for how a configured path is placed and displayed. Only stats paths; reads no file.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from ..errors import ConfigError

__all__ = ["SymlinkLoopError", "display", "locate", "real", "resolve_dir"]


class SymlinkLoopError(Exception):
    """Resolving a path ran into a symlink loop (reported as a config problem by the caller)."""


def locate(raw: Path, root: Path) -> tuple[Path, Path]:
    """The absolute path to use and its symlink-resolved form (for containment checks).

    Raises:
        SymlinkLoopError: Resolution runs into a symlink loop.
    """
    joined = raw if raw.is_absolute() else root / raw
    resolved = real(joined)
    # Lexically collapsing ".." is wrong after a symlink; fall back to the real path then.
    return (resolved if ".." in joined.parts else joined), resolved


def real(path: Path) -> Path:
    """``path`` with every symlink resolved (it need not exist).

    Raises:
        SymlinkLoopError: Resolution runs into a symlink loop.
    """
    try:
        resolved = Path(os.path.realpath(path))
        os.stat(resolved)
    except RuntimeError as exc:
        raise SymlinkLoopError(str(exc)) from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SymlinkLoopError(str(exc)) from exc
    return resolved


def resolve_dir(path: Path) -> Path:
    """The project folder, absolute with symlinks resolved.

    Raises:
        ConfigError: A symlink loop.
    """
    try:
        return real(path.absolute())
    except SymlinkLoopError as exc:
        raise ConfigError(f"{path}: symlink loop while resolving the project folder") from exc


def display(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` when inside it (POSIX), else absolute."""
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
