"""Watch mode: rebuild models when their input files or the project's configs change.

`Watcher` knows models only as names mapped to input files (and folders searched for discovered
artefacts); it rebuilds through a callback. It watches with watchdog (inotify, or polling for
network file systems), coalesces bursts, waits until files are completely written and runs at
most one build at a time, with exactly one follow-up build for changes made during a build.

This module must not import doit or the task layer (the build is a callback) and must not
configure logging; importing it starts nothing.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.observers.polling import PollingObserver

from ..errors import AneError, ConfigError
from .watchpaths import (
    PathIndex,
    WatchLimitError,
    abs_path,
    ident,
    limit_error,
    real_path,
    shorten,
    stat_of,
)

__all__ = ["InputsFn", "ObserverFactory", "WatchLimitError", "Watcher"]

logger = logging.getLogger(__name__)

InputsFn = Callable[[], Mapping[str, Collection[Path]]]
BuildFn = Callable[[frozenset[str] | None], object]
ObserverFactory = Callable[[], BaseObserver]

# Opened/closed-without-write events (our own build reading inputs) and directory "modified"
# events (implied by the child events we do get) carry no information; not asking for them keeps
# a build that reads multi-GB inputs from flooding the queue.
_EVENT_FILTER: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    DirCreatedEvent,
    FileModifiedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileDeletedEvent,
    DirDeletedEvent,
    FileMovedEvent,
    DirMovedEvent,
]
_WAIT_SLICE = 0.1  # longest sleep between checks of the stop event
_SHOWN_TRIGGERS = 3


@dataclass
class _Change:
    """One changed path waiting to be built.

    Attributes:
        models: Models affected; None means every model (a config file changed).
        last_event: Monotonic time of the latest event on this path.
        busy: Written through a file descriptor that has not been closed yet (inotify only).
        final: Renamed into place or deleted: there is nothing left to settle.
        stat: (size, mtime_ns) at the last readiness check, None before the first one.
        stable_since: When ``stat`` last changed.
    """

    models: set[str] | None
    last_event: float
    busy: bool = False
    final: bool = False
    stat: tuple[int, int] | None = None
    stable_since: float = 0.0


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: Watcher) -> None:
        self._watcher = watcher

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            self._watcher._on_event(event)
        except Exception:
            # An exception here would kill watchdog's dispatcher thread and watching would
            # silently stop; log it and keep going.
            logger.exception("error while handling %r", event)


class Watcher:
    """Rebuild affected models whenever their inputs or the project configs change.

    Args:
        inputs: Returns model name -> input files. Called at start and after every build, because
            the set of discovered artefacts can change.
        build: Rebuilds the given models (None: all of them). Its result is ignored; exceptions
            are logged and watching goes on.
        config_dir: The ``configs/`` folder; a change to any ``*.toml`` in it rebuilds every model.
        roots: Returns model name -> folders searched for discovered artefacts; they are watched
            recursively so adding or removing a file there is seen. Called like ``inputs``.
        ignore: Returns True for paths that must never trigger a build (our own outputs, build
            state). Hidden files and temporary files are always ignored unless they are inputs.
        debounce: Seconds without any event before a burst is considered over.
        settle: Seconds a changed file's size and mtime must stay the same before it is built
            (files renamed into place or deleted are built without waiting).
        poll: Use a polling observer (network file systems) instead of inotify.
        poll_interval: Seconds between polls in polling mode.
        stall: Seconds after which a file still open for writing, but no longer changing, is
            built anyway (a writer that never closes must not block watching forever).
        observer_factory: Creates the watchdog observer; overrides ``poll`` (for tests).
        build_first: Build every model once when watching has started.

    Raises:
        ConfigError: A timing argument is negative or zero where it must be positive.
    """

    def __init__(
        self,
        *,
        inputs: InputsFn,
        build: BuildFn,
        config_dir: Path,
        roots: InputsFn | None = None,
        ignore: Callable[[Path], bool] | None = None,
        debounce: float = 0.15,
        settle: float = 0.1,
        poll: bool = False,
        poll_interval: float = 0.5,
        stall: float = 2.0,
        observer_factory: ObserverFactory | None = None,
        build_first: bool = False,
    ) -> None:
        for name, value in (("debounce", debounce), ("settle", settle)):
            if value < 0:
                raise ConfigError(f"watch: {name} must be 0 or more seconds (got {value})")
        for name, value in (("poll_interval", poll_interval), ("stall", stall)):
            if value <= 0:
                raise ConfigError(f"watch: {name} must be more than 0 seconds (got {value})")
        self._inputs_fn = inputs
        self._roots_fn = roots
        self._build_fn = build
        self._ignore = ignore
        self._config_dir = abs_path(config_dir)
        self._config_dirs = frozenset({self._config_dir, real_path(self._config_dir)})
        self._debounce = debounce
        # A poller only notices a change one interval late, so "unchanged for settle seconds"
        # means nothing unless it spans at least one poll.
        self._settle = max(settle, poll_interval) if poll else settle
        self._poll = poll
        self._poll_interval = poll_interval
        self._stall = stall
        self._observer_factory = observer_factory
        self._build_first = build_first
        self._handler = _Handler(self)
        self._cond = threading.Condition()
        self._pending: dict[Path, _Change] = {}
        self._last_event = 0.0
        self._index = PathIndex({}, {}, self._config_dirs, ignore)
        self._watches: dict[Path, tuple[bool, tuple[int, int], ObservedWatch]] = {}
        self._observer: BaseObserver | None = None
        self._builds = 0
        self.ready = threading.Event()
        """Set once every observer is running (tests and callers wait on it)."""

    @property
    def builds(self) -> int:
        """Number of builds started so far."""
        return self._builds

    def run(self, stop: threading.Event | None = None) -> bool:
        """Watch and rebuild until ``stop`` is set or Ctrl-C; returns normally in both cases.

        Args:
            stop: Set it (from another thread) to make `run` return.

        Returns:
            True when Ctrl-C ended it, False when ``stop`` did.

        Raises:
            WatchLimitError: The inotify watch or instance limit was hit (the message says how to
                raise it, or to use polling).
        """
        stop = stop or threading.Event()
        try:
            # The inotify observer calls inotify_init when it is created: EMFILE shows up here.
            observer = self._make_observer()
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EMFILE):
                raise limit_error(exc, None) from exc
            raise
        self._observer = observer
        try:
            self._refresh(initial=True)
            self._start(observer)
            self.ready.set()
            logger.info(
                "watching %d folder(s) for %d model(s)%s; Ctrl-C stops",
                len(self._watches),
                len(self._index.models),
                " (polling)" if self._poll and self._observer_factory is None else "",
            )
            if self._build_first:
                self._build(None, [])
                self._refresh()
            while True:
                batch = self._next_batch(stop)
                if batch is None:
                    return False
                models, paths, structural = batch
                if structural:
                    # A folder appeared or moved: watch it before building, so that a file
                    # written into it while the build runs is not missed.
                    self._reschedule()
                self._build(models, paths)
                self._refresh()
        except KeyboardInterrupt:
            logger.debug("watch stopped by Ctrl-C")
            return True
        finally:
            self._observer = None
            self._watches.clear()
            self.ready.clear()
            with contextlib.suppress(Exception):
                observer.stop()
            if observer.is_alive():
                observer.join(timeout=5)

    # --- observers ---------------------------------------------------------------------------

    def _make_observer(self) -> BaseObserver:
        if self._observer_factory is not None:
            return self._observer_factory()
        if self._poll:
            return PollingObserver(timeout=self._poll_interval)
        return Observer()

    def _start(self, observer: BaseObserver) -> None:
        try:
            observer.start()
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EMFILE):
                raise limit_error(exc, None) from exc
            raise

    def _schedule(self, folder: Path, recursive: bool) -> ObservedWatch | None:
        observer = self._observer
        if observer is None:
            return None
        try:
            return observer.schedule(
                self._handler, str(folder), recursive=recursive, event_filter=_EVENT_FILTER
            )
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EMFILE):
                raise limit_error(exc, folder) from exc
            # The folder vanished between our check and the watch (or is unreadable); the next
            # refresh watches its nearest existing parent instead.
            logger.warning("cannot watch %s: %s", folder, exc.strerror or exc)
            return None

    def _unschedule(self, watch: ObservedWatch) -> None:
        observer = self._observer
        if observer is None:
            return
        with contextlib.suppress(KeyError, OSError, RuntimeError):
            observer.unschedule(watch)

    def _refresh(self, *, initial: bool = False) -> None:
        """Re-query inputs and roots, rebuild the path index and adjust the watches."""
        try:
            inputs = self._inputs_fn()
            roots = self._roots_fn() if self._roots_fn is not None else {}
        except (AneError, OSError) as exc:
            if initial:
                raise
            # Typically a config being edited; its next save triggers another build and refresh.
            logger.error("cannot list the inputs to watch (keeping the previous list): %s", exc)
            return
        index = PathIndex(inputs, roots, self._config_dirs, self._ignore)
        with self._cond:
            self._index = index
        self._reschedule()

    def _reschedule(self) -> None:
        """Make the set of watched folders match the current index."""
        with self._cond:
            wanted = self._index.targets()
        for folder in list(self._watches):
            recursive, watched_ident, watch = self._watches[folder]
            if wanted.get(folder) != recursive or ident(folder) != watched_ident:
                # Gone, changed recursion, or deleted and recreated (the old watch died with it).
                self._unschedule(watch)
                del self._watches[folder]
        for folder, recursive in wanted.items():
            if folder in self._watches:
                continue
            folder_id = ident(folder)
            if folder_id is None:
                continue
            new = self._schedule(folder, recursive)
            if new is not None:
                self._watches[folder] = (recursive, folder_id, new)

    # --- events ------------------------------------------------------------------------------

    def _on_event(self, event: FileSystemEvent) -> None:
        kind = event.event_type
        if event.is_directory and kind in ("modified", "attrib"):
            return
        if kind == "moved":
            # Never drop the destination of a rename: that is how finished files arrive.
            changes = [(_event_path(event.src_path), "gone"), (_event_path(event.dest_path), "in")]
        elif kind == "deleted":
            changes = [(_event_path(event.src_path), "gone")]
        else:
            changes = [(_event_path(event.src_path), kind)]
        now = time.monotonic()
        with self._cond:
            for path, how in changes:
                if not str(path) or path == Path("."):
                    continue
                models = self._index.affected(path)
                if models is not None and not models:
                    continue
                self._record(path, how, models, now, is_dir=event.is_directory)
            self._cond.notify_all()

    def _record(
        self, path: Path, how: str, models: set[str] | None, now: float, *, is_dir: bool
    ) -> None:
        change = self._pending.get(path)
        if change is None:
            change = self._pending[path] = _Change(models=set(), last_event=now)
        if models is None or change.models is None:
            change.models = None
        else:
            change.models |= models
        change.last_event = now
        self._last_event = now
        if how in ("gone", "in") or is_dir:
            change.final, change.busy = True, False
        elif how == "modified":
            change.final = False
            # Only inotify reports closes; a poller cannot tell "open" from "done".
            change.busy = not self._poll
        elif how == "closed":
            change.busy = False
        elif how == "created":
            change.final = False

    def _next_batch(self, stop: threading.Event) -> tuple[set[str] | None, list[Path], bool] | None:
        """Wait until a burst is over and every changed file is complete; take it.

        Returns:
            (models or None for all, changed paths, whether a folder changed), or None when
            ``stop`` was set.
        """
        with self._cond:
            while True:
                if stop.is_set():
                    return None
                if not self._pending:
                    self._cond.wait(_WAIT_SLICE)
                    continue
                now = time.monotonic()
                quiet = now - self._last_event
                if quiet < self._debounce:
                    self._cond.wait(min(self._debounce - quiet, _WAIT_SLICE))
                    continue
                delay = self._not_ready(now)
                if delay > 0:
                    self._cond.wait(min(delay, _WAIT_SLICE))
                    continue
                batch, self._pending = self._pending, {}
                models: set[str] | None = set()
                structural = False
                for path, change in batch.items():
                    if change.models is None or models is None:
                        models = None
                    else:
                        models |= change.models
                    structural = structural or self._index.is_ancestor(path) or path.is_dir()
                return models, sorted(batch), structural

    def _not_ready(self, now: float) -> float:
        """Seconds to wait before the pending changes may be complete; 0 when they are."""
        delay = 0.0
        for path, change in self._pending.items():
            if change.final:
                continue
            stat = stat_of(path)
            if stat is None:
                continue  # deleted meanwhile: a deletion needs no settling
            if stat != change.stat:
                if change.stat is not None:
                    change.stable_since = now
                change.stat = stat
            quiet_since = max(change.last_event, change.stable_since)
            if change.busy:
                if now - quiet_since < self._stall:
                    delay = max(delay, min(self._stall - (now - quiet_since), _WAIT_SLICE))
                    continue
                logger.warning(
                    "%s is still open for writing but has not changed for %.1f s; building it",
                    path,
                    now - quiet_since,
                )
                change.busy = False
            if now - quiet_since < self._settle:
                delay = max(delay, self._settle - (now - quiet_since))
        return delay

    # --- building ----------------------------------------------------------------------------

    def _build(self, models: set[str] | None, paths: list[Path]) -> None:
        self._builds += 1
        names = "every model" if models is None else ", ".join(sorted(models))
        logger.info("building %s (%s)", names, self._describe(paths))
        try:
            self._build_fn(None if models is None else frozenset(models))
        except (AneError, OSError) as exc:
            logger.error("build failed: %s", exc)
        except KeyboardInterrupt:
            raise
        except Exception:
            # Watch mode outlives a failing build: the user fixes the input and saves again.
            logger.exception("build raised an unexpected error")

    def _describe(self, paths: Iterable[Path]) -> str:
        shown = [shorten(path, self._config_dir.parent) for path in paths]
        if not shown:
            return "initial build"
        more = len(shown) - _SHOWN_TRIGGERS
        text = ", ".join(shown[:_SHOWN_TRIGGERS])
        return f"changed: {text}" + (f" and {more} more" if more > 0 else "")


def _event_path(raw: str | bytes) -> Path:
    return Path(os.fsdecode(raw))
