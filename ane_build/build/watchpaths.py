"""What a changed path means to watch mode: which models it affects, which folders to watch.

`PathIndex` maps input files, artefact roots (watched recursively) and the folders above them to
models; a config file stands for every model. Also the inotify limit error and small path
helpers. Pure path logic: no watchdog, no observers, no builds.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

from ..errors import ConfigError

__all__ = [
    "PathIndex",
    "WatchLimitError",
    "abs_path",
    "ident",
    "limit_error",
    "real_path",
    "shorten",
    "stat_of",
]

_TEMP_SUFFIXES = (".tmp", ".temp", ".swp", ".swx", ".part", ".partial", "~")
_CONFIG_SUFFIX = ".toml"


class WatchLimitError(ConfigError):
    """The system's inotify limits do not allow watching every input folder."""


class PathIndex:
    """Paths to the models they concern, for one set of inputs and roots.

    Args:
        inputs: Model name -> input files.
        roots: Model name -> folders whose whole content (at any depth) is input.
        config_dirs: The ``configs/`` folder as given and resolved; a ``*.toml`` in it affects
            every model.
        ignore: Returns True for paths that must never trigger a build; asked once per path.
    """

    def __init__(
        self,
        inputs: Mapping[str, Collection[Path]],
        roots: Mapping[str, Collection[Path]],
        config_dirs: frozenset[Path],
        ignore: Callable[[Path], bool] | None = None,
    ) -> None:
        self.config_dirs = config_dirs
        self._ignore = ignore
        self._ignored: dict[Path, bool] = {}
        self.files: dict[Path, set[str]] = {}
        self.roots: dict[Path, set[str]] = {}
        self._ancestors: dict[Path, set[str]] = {}
        for index, mapping in ((self.files, inputs), (self.roots, roots)):
            for model, paths in mapping.items():
                for path in paths:
                    # Events name the path as seen through the watched folder; index both the
                    # path as given and its symlink target so either spelling is recognised.
                    for variant in {abs_path(path), real_path(path)}:
                        index.setdefault(variant, set()).add(model)
                        for parent in variant.parents:
                            self._ancestors.setdefault(parent, set()).add(model)

    @property
    def models(self) -> set[str]:
        """Every model with an input file."""
        return {m for ms in self.files.values() for m in ms}

    def is_ancestor(self, path: Path) -> bool:
        """Whether ``path`` is a folder above some input."""
        return path in self._ancestors

    def affected(self, path: Path) -> set[str] | None:
        """Models a change of ``path`` affects: None for all, an empty set for none."""
        if self._ignore is not None:
            # The callback may be costly (it can reload the project); its answer only changes
            # when the inputs do, so it is asked once per path for this index.
            ignored = self._ignored.get(path)
            if ignored is None:
                ignored = self._ignored[path] = bool(self._ignore(path))
            if ignored:
                return set()
        if path.parent in self.config_dirs and path not in self.files:
            if path.suffix == _CONFIG_SUFFIX and not is_temp(path.name):
                return None
            return set()
        # An explicit input counts whatever its name; it may also lie in another model's root.
        models: set[str] = set(self.files.get(path, ()))
        models |= self._ancestors.get(path, set())
        for folder in (path, *path.parents):
            owners = self.roots.get(folder)
            if owners is None:
                continue
            rel = path.relative_to(folder).parts
            if not any(is_temp(part) for part in rel):
                models |= owners
        return models

    def targets(self) -> dict[Path, bool]:
        """Folders to watch (folder -> recursive), existing ones only, none covered twice."""
        wanted: dict[Path, bool] = dict.fromkeys(self.config_dirs, False)
        for root in self.roots:
            wanted[root] = True
        for path in self.files:
            wanted.setdefault(path.parent, False)
        existing: dict[Path, bool] = {}
        for folder, recursive in wanted.items():
            if folder.is_dir():
                existing[folder] = existing.get(folder, False) or recursive
            else:
                # Watch the nearest existing parent: creating the missing folder is then an
                # event on an ancestor of an input, which triggers a build and a refresh.
                existing.setdefault(nearest_existing(folder), False)
        recursive_dirs = {folder for folder, rec in existing.items() if rec}
        return {
            folder: rec
            for folder, rec in existing.items()
            if not any(parent in recursive_dirs for parent in folder.parents)
        }


def limit_error(exc: OSError, path: Path | None) -> WatchLimitError:
    """The error for an inotify limit that was hit, saying how to raise it."""
    if exc.errno == errno.EMFILE:
        what, key, value = "inotify instance limit", "fs.inotify.max_user_instances", 1024
        extra = " (or the open-file limit, see `ulimit -n`)"
    else:
        what, key, value = "inotify watch limit", "fs.inotify.max_user_watches", 524288
        extra = ""
    current = _read_sysctl(key)
    now = f" (currently {current})" if current else ""
    if current is not None and current.isdigit():
        value = max(value, 2 * int(current))
    where = f"cannot watch {path}" if path is not None else "cannot start watching"
    return WatchLimitError(
        f"{where}: the {what} is reached: {key}{now}{extra}. Raise it with "
        f"`sudo sysctl {key}={value}` (to keep it across reboots, put `{key} = {value}` in "
        "/etc/sysctl.d/90-inotify.conf), stop other programs that watch many files, or run "
        "watch with --poll (polls instead of inotify; slower to react)"
    )


def _read_sysctl(key: str) -> str | None:
    try:
        return Path("/proc/sys", *key.split(".")).read_text().strip()
    except OSError:
        return None


def abs_path(path: Path) -> Path:
    """``path`` made absolute without resolving symlinks."""
    return Path(os.path.abspath(path))


def real_path(path: Path) -> Path:
    """``path`` with symlinks resolved."""
    return Path(os.path.realpath(path))


def stat_of(path: Path) -> tuple[int, int] | None:
    """(size, mtime_ns), or None when the path cannot be stat'ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def ident(folder: Path) -> tuple[int, int] | None:
    """(device, inode) of a folder: a folder deleted and recreated gets another."""
    try:
        st = os.stat(folder)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def nearest_existing(folder: Path) -> Path:
    """``folder`` or its nearest parent that is a folder."""
    for parent in (folder, *folder.parents):
        if parent.is_dir():
            return parent
    return Path(folder.anchor or "/")


def is_temp(name: str) -> bool:
    """Whether a file name is a hidden, editor or half-written file's."""
    return name.startswith((".", "#")) or name.endswith(_TEMP_SUFFIXES)


def shorten(path: Path, base: Path) -> str:
    """``path`` relative to ``base`` when inside it."""
    return path.relative_to(base).as_posix() if path.is_relative_to(base) else str(path)
