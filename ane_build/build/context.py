"""The build context of one doit run: the project's task graph, digest cache and build records.

One context per process, created on first use and saved when the process exits (doit has no
end-of-run hook). This module must not import doit or watchdog.
"""

from __future__ import annotations

import atexit
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .layout import (
    DIGESTS_FILE,
    OUTCOMES_DIR,
    RECORDS_DIR,
    STATE_DIR,
    find_project_root,
)
from .state import DigestCache, FileState, RecordStore
from .taskgraph import ModelNode, TaskGraph, load_graph

if TYPE_CHECKING:
    from .project import Project

log = logging.getLogger(__name__)


class BuildContext:
    """A project's task graph and state stores, shared by the tasks of one doit run."""

    def __init__(self, root: Path) -> None:
        self.root = root
        state = root / STATE_DIR
        self._cache: DigestCache | None = None
        self.records = RecordStore(state / RECORDS_DIR)
        self.outcomes = RecordStore(state / OUTCOMES_DIR)
        self._graph: TaskGraph | None = None
        # Input states captured right before an action ran; `FingerprintChecker.get_state`
        # stores these, so a file rewritten during the build is seen as changed next time.
        self.snapshots: dict[str, FileState] = {}
        self._project: Project | None = None
        # One id per doit run, shared by its worker processes (they fork from the one that
        # loaded the tasks): the outcomes a run wrote are those carrying its id.
        self.run_id = f"{time.time_ns():x}-{os.getpid()}"
        self.started = time.time()

    @classmethod
    def load(cls, start: Path | None = None) -> BuildContext:
        """Load the project around ``start`` (the working folder by default).

        Raises:
            ConfigError: No project there, or an invalid config.
        """
        return cls(find_project_root(start or Path.cwd()))

    @property
    def forced(self) -> bool:
        """Whether this run executes tasks even when up to date (``doit -a``)."""
        return _always

    @property
    def cache(self) -> DigestCache:
        """The digest cache, read on first use.

        Not at creation: doit creates the context before it takes the project lock, and a run
        that waited for another would otherwise save a cache from before that run, dropping
        every fingerprint the other run learnt (and re-reading those files next time).
        """
        if self._cache is None:
            self._cache = DigestCache(self.root / STATE_DIR / DIGESTS_FILE)
        return self._cache

    @property
    def project(self) -> Project:
        """The project as loaded (parsed on first use: only actions need it).

        Broken configs do not stop it loading: they are in `Project.broken`.
        """
        if self._project is None:
            from .project import load_project

            self._project = load_project(self.root, strict=False)
        return self._project

    @property
    def graph(self) -> TaskGraph:
        """The task graph, loaded on first use: after the example task has generated inputs."""
        if self._graph is None:
            self._graph = load_graph(self.root, self.cache)
        return self._graph

    @property
    def models(self) -> dict[str, ModelNode]:
        """Models by name."""
        return self.graph.models

    def rel(self, path: Path | str) -> str:
        """``path`` for display, relative to the project root when inside it."""
        text = os.fspath(path)
        prefix = os.fspath(self.root) + os.sep
        return text[len(prefix) :] if text.startswith(prefix) else text

    def inputs(self, name: str) -> list[Path]:
        """Every file a model's container is built from: source, external data, artefacts."""
        return [Path(p) for p in self.models[name].inputs]

    def file_state(self, path: Path | str) -> FileState | None:
        """Current state of ``path``; None when it does not exist."""
        try:
            return self.cache.state(Path(path))
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def save(self) -> None:
        """Persist the digest cache (if it was used)."""
        if self._cache is None:
            return
        try:
            self._cache.save()
        except OSError as exc:
            log.warning("could not save the digest cache: %s", exc)


_context: BuildContext | None = None
_always = False


def set_always(always: bool) -> None:
    """Say that this doit run executes tasks even when up to date (``doit -a``).

    Set by the ``run`` command before tasks load; an action then rebuilds even what its build
    record shows current, since that is what was asked.
    """
    global _always
    _always = always


def context() -> BuildContext:
    """The build context of this process, loaded on first use (saved when the process exits)."""
    global _context
    if _context is None:
        _context = BuildContext.load()
        # doit has no end-of-run hook; without this, fingerprints learnt by an up-to-date check
        # (a touched input hashed once) would be forgotten and the file hashed again next run.
        atexit.register(_context.save)
    return _context


def set_context(ctx: BuildContext | None) -> None:
    """Install (or clear) the build context, e.g. for watch mode's in-process builds."""
    global _context
    _context = ctx
