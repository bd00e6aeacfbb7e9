"""Build state kept under ``<project>/.ane_build/``: the digest cache, build records, the lock.

The digest cache maps a file's fingerprint (path, inode, size, mtime_ns, ctime_ns) to its
sha256, so unchanged files are never read and a touched file is hashed once and then remembered.
Records say what each model was last built from, for up-to-date checks and "why" reasons. All
writes are atomic. This module must not import doit or watchdog.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._fs import write_atomic
from ..errors import BuildError
from .layout import LOCK_FILE, OUTCOMES_DIR, RECORDS_DIR, STATE_DIR

log = logging.getLogger(__name__)

_HASH_CHUNK = 4 << 20


@dataclass(frozen=True)
class FileState:
    """What we know of one file's content: size, mtime and digest."""

    size: int
    mtime_ns: int
    sha256: str

    def to_json(self) -> list[Any]:
        """Compact JSON form."""
        return [self.size, self.mtime_ns, self.sha256]

    @classmethod
    def from_json(cls, data: Any) -> FileState | None:
        """Parse the JSON form; None when it is not one."""
        if (
            isinstance(data, list)
            and len(data) == 3
            and isinstance(data[0], int)
            and isinstance(data[1], int)
            and isinstance(data[2], str)
        ):
            return cls(data[0], data[1], data[2])
        return None


def fingerprint(st: os.stat_result) -> list[int]:
    """The cache key of a stat result: inode, size, mtime_ns, ctime_ns."""
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def read_json(path: Path) -> Any:
    """The JSON content of ``path``, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


class DigestCache:
    """Persistent sha256 cache keyed by file fingerprint.

    Attributes:
        bytes_read: File content bytes read by this instance (for tests and benchmarks).
        files_hashed: Files whose content was read.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        data = read_json(path)
        self._entries: dict[str, list[Any]] = data if isinstance(data, dict) else {}
        self._dirty = False
        self.bytes_read = 0
        self.files_hashed = 0

    def _hash(self, path: Path) -> str:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_HASH_CHUNK):
                digest.update(chunk)
                self.bytes_read += len(chunk)
        self.files_hashed += 1
        return digest.hexdigest()

    def state(self, path: Path, st: os.stat_result | None = None) -> FileState:
        """The file's state, reading its content only when its fingerprint is new.

        Raises:
            OSError: The file cannot be stat'ed or read.
        """
        st = os.stat(path) if st is None else st
        key = os.fspath(path)
        fp = fingerprint(st)
        entry = self._entries.get(key)
        if entry is not None and entry[:4] == fp:
            return FileState(st.st_size, st.st_mtime_ns, entry[4])
        sha = self._hash(path)
        after = os.stat(path)
        if fingerprint(after) == fp:
            # Remember only what we know is consistent: a file rewritten while we hashed it gets
            # hashed again next time instead of being cached under the wrong fingerprint.
            self._entries[key] = [*fp, sha]
            self._dirty = True
        return FileState(st.st_size, st.st_mtime_ns, sha)

    def memo(self, key: str, st: os.stat_result) -> Any:
        """A value memoised for a file fingerprint with `remember`, or None."""
        entry = self._entries.get(key)
        if entry is not None and entry[:4] == fingerprint(st):
            return entry[4]
        return None

    def remember(self, key: str, st: os.stat_result, value: Any) -> None:
        """Memoise a JSON value derived from a file, valid while its fingerprint holds."""
        self._entries[key] = [*fingerprint(st), value]
        self._dirty = True

    def save(self) -> None:
        """Write the cache if it changed, merged with what other processes saved meanwhile.

        Parallel build workers each learn digests; merging under a lock keeps all of them (a lost
        entry would only cost a re-hash, but of a whole container). Atomic, like every write.
        """
        if not self._dirty:
            return
        with _locked(self.path.with_name(self.path.name + ".lock")):
            saved = read_json(self.path)
            merged = saved if isinstance(saved, dict) else {}
            merged.update(self._entries)
            live = {k: v for k, v in merged.items() if k.startswith("ext:") or _exists(k)}
            write_atomic(self.path, json.dumps(live, separators=(",", ":")).encode())
        self._entries = live
        self._dirty = False


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive flock on ``path`` (created) for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _exists(path: str) -> bool:
    return os.path.lexists(path)


class RecordStore:
    """One JSON record per model and step, ``<folder>/<model>.<step>.json``.

    Build records (``.ane_build/records/``) say what a step last built successfully; outcomes
    (``.ane_build/outcomes/``) say how its last run went, failures included.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, model: str, step: str) -> Path:
        """Where the record of ``step`` for ``model`` is kept."""
        return self.folder / f"{model}.{step}.json"

    def get(self, model: str, step: str) -> dict[str, Any] | None:
        """The last record of ``step`` for ``model``, or None."""
        data = read_json(self.path(model, step))
        return data if isinstance(data, dict) else None

    def put(self, model: str, step: str, record: dict[str, Any]) -> None:
        """Replace the record atomically."""
        body = json.dumps(record, indent=1, sort_keys=True) + "\n"
        write_atomic(self.path(model, step), body.encode())

    def delete(self, model: str, step: str | None = None) -> None:
        """Remove one step's record, or every record of ``model`` when ``step`` is None."""
        steps = [step] if step else [s for m, s in self.entries() if m == model]
        for one in steps:
            with contextlib.suppress(FileNotFoundError):
                self.path(model, one).unlink()

    def entries(self) -> list[tuple[str, str]]:
        """Every (model, step) with a record, sorted."""
        try:
            names = os.listdir(self.folder)
        except OSError:
            return []
        found = []
        for name in names:
            # Step names hold no dot, model names may: the step is the second-to-last part.
            model, _, rest = name.removesuffix(".json").rpartition(".")
            if name.endswith(".json") and not name.startswith(".") and model:
                found.append((model, rest))
        return sorted(found)


def forget(root: Path, task_id: str | None) -> None:
    """Drop our build records of a task doit forgets (``doit forget``); all of them for None.

    Without its record a step cannot be "kept per its build record": it rebuilds, as asked.
    """
    stores = [
        RecordStore(root / STATE_DIR / RECORDS_DIR),
        RecordStore(root / STATE_DIR / OUTCOMES_DIR),
    ]
    for store in stores:
        if task_id is None:
            for model, step in store.entries():
                store.delete(model, step)
            continue
        step, _, model = task_id.partition(":")
        if model:
            store.delete(model, step)


_held: dict[Path, tuple[int, int]] = {}


@contextmanager
def project_lock(root: Path, *, wait_message: bool = True) -> Iterator[None]:
    """Hold the project's build lock; re-entrant within a process.

    A second process waits, saying which process holds the lock.

    Raises:
        BuildError: The lock file cannot be created.
    """
    path = root / STATE_DIR / LOCK_FILE
    if path in _held:
        fd, depth = _held[path]
        _held[path] = (fd, depth + 1)
        try:
            yield
        finally:
            fd, depth = _held[path]
            _held[path] = (fd, depth - 1)
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise BuildError(f"{path}: cannot create the build lock: {exc.strerror}") from exc
    try:
        _acquire(fd, path, wait_message)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _held[path] = (fd, 1)
        try:
            yield
        finally:
            del _held[path]
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _acquire(fd: int, path: Path, wait_message: bool) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EACCES):
            raise
    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
    if wait_message:
        log.warning("waiting for the build lock %s (held by pid %s)...", path, holder)
    start = time.monotonic()
    fcntl.flock(fd, fcntl.LOCK_EX)
    log.info("build lock acquired after %.1f s", time.monotonic() - start)


def hold_project_lock(root: Path) -> None:
    """Take the project lock for the rest of this process (the doit CLI's case). Idempotent."""
    if root / STATE_DIR / LOCK_FILE in _held:
        return
    lock = project_lock(root)
    lock.__enter__()
    # Deliberately never exited: the kernel drops the flock when the process ends.
    _forever.append(lock)


_forever: list[object] = []
