"""Temp files for atomic replaces, and removal of the ones killed writers left behind.

Every file we replace atomically is written to ``.<name>.XXXXXXXX.tmp`` beside it, then renamed
over it. A writer killed with SIGKILL cannot remove its temp file, so the next writer of the same
file does. To tell an abandoned temp file from one a live process is still writing (two converter
runs by hand, watch mode next to a manual build), each writer holds an exclusive ``flock`` on its
temp file from creation until after the rename. The kernel drops that lock when the writer dies,
however it dies, so "the lock can be taken" means "nobody is writing this any more". No clock, pid
or grace period is involved: a temp file one microsecond old is removed if its writer is dead, and
one a day old is kept while its writer lives.

The cleaner unlinks a temp file while holding its lock, and a writer checks, once it holds the lock
on its fresh temp file, that the file still has a name; so a cleaner that wins the race between
``mkstemp`` and ``flock`` costs the writer a retry, never its output. On a file system without
``flock`` support nothing is ever removed (safe, merely untidy). This module imports only the
standard library.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import stat
from contextlib import suppress
from pathlib import Path
from tempfile import mkstemp

log = logging.getLogger(__name__)

TEMP_SUFFIX = ".tmp"
# mkstemp's random part: 8 characters of [a-z0-9_] today. Accept a little more, never less, so a
# file merely named like ours (".out.onnx.tmp", ".out.onnx.backup.1.tmp") is left alone.
_RANDOM_PART = re.compile(r"[A-Za-z0-9_]{6,16}")
_CREATE_ATTEMPTS = 16


def temp_prefix(target: Path) -> str:
    """The name prefix of ``target``'s temp files (``.<name>.``)."""
    return f".{target.name}."


def is_temp_of(name: str, target: Path) -> bool:
    """Whether ``name`` (a file name in ``target``'s folder) is one of ``target``'s temp files."""
    prefix = temp_prefix(target)
    if not (name.startswith(prefix) and name.endswith(TEMP_SUFFIX)):
        return False
    return _RANDOM_PART.fullmatch(name[len(prefix) : -len(TEMP_SUFFIX)]) is not None


def remove_stale_temps(target: Path) -> list[Path]:
    """Remove ``target``'s temp files whose writer is gone; leave those a live process holds.

    Only names of the form ``.<target name>.XXXXXXXX.tmp`` in ``target``'s folder are looked at,
    only regular files are removed, and only when their writer's lock can be taken.

    Returns:
        The temp files removed.
    """
    folder = Path(os.path.dirname(os.path.abspath(target)))
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    removed = []
    for name in names:
        if is_temp_of(name, target) and _remove_if_abandoned(folder / name):
            log.info("removed %s, left behind by an interrupted write", folder / name)
            removed.append(folder / name)
    return removed


def _remove_if_abandoned(path: Path) -> bool:
    try:
        # O_NOFOLLOW: a symlink under our name is not ours to follow; O_NONBLOCK: never hang on
        # a FIFO someone put there.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            # EWOULDBLOCK: its writer is alive. Anything else (no locks on this file system):
            # we cannot tell, so we keep it.
            return False
        try:
            now = os.lstat(path)
        except OSError:
            return False  # renamed into place or removed meanwhile
        if (now.st_dev, now.st_ino) != (before.st_dev, before.st_ino):
            return False
        # Unlinked while we hold the lock: a writer that locks it after us sees no name left.
        os.unlink(path)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def create_temp(target: Path) -> tuple[int, str]:
    """Create and lock a temp file beside ``target``, after removing abandoned ones.

    Removing first also frees the space a killed writer's half-written file held, which matters
    on a nearly full disk. Keep the returned fd open (it holds the lock) until the temp file has
    been renamed over ``target`` or removed.

    Returns:
        The open fd (read/write, close-on-exec, locked) and the temp file's path.

    Raises:
        OSError: The temp file cannot be created.
    """
    folder = os.path.dirname(os.path.abspath(target))
    remove_stale_temps(target)
    for _ in range(_CREATE_ATTEMPTS):
        fd, tmp = mkstemp(dir=folder, prefix=temp_prefix(target), suffix=TEMP_SUFFIX)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            return fd, tmp  # no locks on this file system; cleaners cannot lock it either
        except BaseException:
            os.close(fd)
            with suppress(OSError):
                os.unlink(tmp)
            raise
        if os.fstat(fd).st_nlink:
            return fd, tmp
        # Another writer's cleanup took it in the instant before our lock; take another name.
        os.close(fd)
    raise OSError(errno.EAGAIN, f"cannot keep a temp file in {folder}: removed every time")
