"""The one way files are replaced and opened for reading: atomic writes, temp files, OS messages.

Every file we write goes to a locked temp file beside its target (``.<name>.XXXXXXXX.tmp``), is
fsynced, gets the permissions a new file would get (0666 minus the umask, or the target's own
mode when it exists) and is renamed over the target, so a reader sees the old file or the new one,
never half of one. A writer killed with SIGKILL cannot remove its temp file, so the next writer of
the same target does: each writer holds an exclusive ``flock`` on its temp file from creation until
after the rename, and the kernel drops that lock when the writer dies, however it dies. "The lock
can be taken" therefore means "nobody is writing this any more"; no clock, pid or grace period is
involved. The cleaner unlinks a temp file while holding its lock, and a writer checks, once it
holds the lock on its fresh temp file, that the file still has a name; so a cleaner that wins the
race between ``mkstemp`` and ``flock`` costs the writer a retry, never its output. On a file
system without ``flock`` nothing is ever removed (safe, merely untidy).

This module imports only the standard library and `errors`; it knows nothing of file formats.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import stat
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from tempfile import mkstemp
from typing import BinaryIO, TypeVar

from .errors import AneError, FileAccessError

log = logging.getLogger(__name__)

TEMP_SUFFIX = ".tmp"
# mkstemp's random part: 8 characters of [a-z0-9_] today. Accept a little more, never less, so a
# file merely named like ours (".out.onnx.tmp", ".out.onnx.backup.1.tmp") is left alone.
_RANDOM_PART = re.compile(r"[A-Za-z0-9_]{6,16}")
_CREATE_ATTEMPTS = 16

_T = TypeVar("_T")


# --- messages -----------------------------------------------------------------------------------


def os_reason(exc: OSError) -> str:
    """``strerror (ENAME)``: the text for people, the errno name for searching and scripts."""
    name = errno.errorcode.get(exc.errno or 0)
    text = exc.strerror or str(exc)
    return f"{text} ({name})" if name else text


def os_problem(path: Path, exc: OSError) -> str:
    """One human phrase for an OS error met while opening or reading ``path``."""
    if exc.errno == errno.ENOENT:
        if os.path.islink(path):
            return f"dangling symlink (points to {os.readlink(path)}, which does not exist)"
        return "does not exist"
    if exc.errno == errno.ELOOP:
        return "symlink loop (the link resolves back to itself)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied (cannot read it)"
    if exc.errno == errno.EISDIR:
        return "is a directory, expected a file"
    if exc.errno == errno.ENOTDIR:
        return "a parent of this path is not a directory"
    return f"cannot read: {os_reason(exc)}"


def open_regular(path: Path, what: str, error: type[AneError], *, buffering: int = -1) -> BinaryIO:
    """Open a regular file for binary reading; every OS problem becomes ``error`` with a message.

    Only regular files are opened: a FIFO would block until a writer appears (forever, in a
    build) and a device never ends.

    Args:
        path: The file.
        what: What the file is meant to be, for messages (e.g. ``"microcode"``).
        error: The `AneError` subclass to raise.
        buffering: Passed to `open`.

    Raises:
        AneError: ``error``, naming ``what`` and ``path``, chained from the OS error.
    """
    try:
        st = os.stat(path)
    except OSError as exc:
        raise error(f"{what} {path}: {os_problem(path, exc)}") from exc
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{what} {path}: is a directory, expected a file")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{what} {path}: not a regular file (a FIFO, socket or device)")
    try:
        return open(path, "rb", buffering=buffering)
    except OSError as exc:
        raise error(f"{what} {path}: {os_problem(path, exc)}") from exc


# --- temp files ---------------------------------------------------------------------------------


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


# --- atomic replace -----------------------------------------------------------------------------


def default_mode() -> int:
    """Permissions a new file gets (0666 minus the umask), read without changing the umask."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    # No /proc: setting and restoring the umask is the only portable way to read it.
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some file systems refuse fsync on folders; the rename itself has happened.
        log.debug("%s: fsync of the folder failed: %s", folder, exc)
    finally:
        os.close(fd)


def open_output(fd: int) -> BinaryIO:
    """The stream an atomic write goes through (a seam where tests put a full disk)."""
    return os.fdopen(fd, "wb")


def replace_atomically(
    target: Path,
    write: Callable[[BinaryIO, str], _T],
    *,
    error: type[FileAccessError] = FileAccessError,
) -> _T:
    """Run ``write(stream, temp_path)`` on a temp file beside ``target``, then rename it over.

    The temp file is fsynced and given ``target``'s mode (or a new file's mode under the umask)
    before the rename; the folder is fsynced after it. On any failure, KeyboardInterrupt
    included, the temp file is removed and ``target`` is untouched; one left by a writer killed
    outright is removed by the next write of ``target``. The parent folder must exist.

    Args:
        target: The file to replace.
        write: Writes the new content; gets the stream and the temp file's path.
        error: The `FileAccessError` subclass OS errors are raised as.

    Returns:
        What ``write`` returned.

    Raises:
        FileAccessError: ``error``, naming ``target``, with the errno and the OS error as cause.
        AneError: What ``write`` raised.
    """
    try:
        return _replace(target, write)
    except AneError:
        raise
    except OSError as exc:
        raise error(
            f"{target}: cannot write: {os_reason(exc)}; nothing was replaced", exc.errno
        ) from exc


def _replace(target: Path, write: Callable[[BinaryIO, str], _T]) -> _T:
    folder = os.path.dirname(os.path.abspath(target))
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        mode = default_mode()
    fd, tmp = create_temp(target)
    try:
        with open_output(fd) as out:
            result = write(out, tmp)
            out.flush()
            os.fchmod(out.fileno(), mode)
            os.fsync(out.fileno())
            # Renamed while still open: the fd holds the lock that tells other writers' cleanup
            # this temp file is alive, until it no longer carries a temp name.
            os.replace(tmp, target)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)
    return result


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (see `replace_atomically`); creates the folder.

    Raises:
        FileAccessError: The folder or the file cannot be written (names it, keeps the errno).
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FileAccessError(
            f"{path.parent}: cannot create the folder: {os_reason(exc)}", exc.errno
        ) from exc
    replace_atomically(path, lambda out, _tmp: out.write(data))
