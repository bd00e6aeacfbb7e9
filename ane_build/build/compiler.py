"""Run a model's compiler: into a fresh folder, logged, timed out, swapped in only on success.

The compiler writes into a new folder beside its outputs folder; after it exits 0 the new folder
replaces the old one in one rename (the old one is removed after), so a failed, killed or timed
out compile leaves the last good artefacts in place. Its stdout and stderr go to one log file,
written atomically. This module runs the process and moves folders; it must not decide what is
stale or print.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import glob
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .._fs import default_mode, os_reason, replace_atomically
from ..errors import BuildError
from .compilespec import CompileSpec

__all__ = ["CompileRun", "run_compiler", "tail"]

TAIL_LINES = 20
_KILL_GRACE_S = 5.0
_NEW, _OLD = ".compile-", ".old-"
_RENAME_EXCHANGE = 2


@dataclass(frozen=True)
class CompileRun:
    """A compiler run that succeeded: its command line and how long it took."""

    argv: list[str]
    seconds: float


def run_compiler(spec: CompileSpec, name: str, root: Path, source: Path, log: Path) -> CompileRun:
    """Run the compiler of ``name`` and swap its fresh output folder in.

    Raises:
        BuildError: The compiler could not start, exited non-zero, timed out or wrote nothing;
            the message shows the command line, the log and its last lines, and says that the
            previous artefacts were kept.
    """
    outputs = spec.outputs
    outputs.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(outputs)
    fresh = Path(tempfile.mkdtemp(prefix=f".{outputs.name}{_NEW}", dir=outputs.parent))
    try:
        values = spec.values(name, root, source, fresh)
        argv = spec.argv(values)
        env = {**os.environ, **spec.environment(values)}
        log.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        problem = replace_atomically(
            log, lambda out, _tmp: _run(argv, root, env, spec.timeout_s, out)
        )
        seconds = time.monotonic() - started
        if problem is None and not any(fresh.iterdir()):
            problem = f"it wrote nothing into {{out}} ({fresh.name})"
        if problem is not None:
            raise BuildError(_failure(argv, problem, outputs, log, root))
        # mkdtemp makes a private folder; the artefacts folder gets a new folder's mode.
        mode = default_mode()
        os.chmod(fresh, mode | (mode & 0o444) >> 2)
        _swap_in(fresh, outputs)
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
    return CompileRun(argv, seconds)


def _run(
    argv: list[str], root: Path, env: dict[str, str], timeout: float, out: BinaryIO
) -> str | None:
    """Run the command with its output going to ``out``; what went wrong, or None."""
    out.write(f"$ {shlex.join(argv)}\n".encode())
    out.flush()
    try:
        proc = subprocess.Popen(
            argv,
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out.fileno(),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: a timeout stops its children too
        )
    except OSError as exc:
        out.write(f"cannot start {argv[0]}: {os_reason(exc)}\n".encode())
        return f"it cannot start: {argv[0]}: {os_reason(exc)}"
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        _stop(proc)
        return f"it was stopped after compile.timeout_s = {timeout:g} s"
    except BaseException:
        _stop(proc)  # Ctrl-C: the compiler goes too, and nothing is swapped in
        raise
    if code < 0:
        return f"it was killed by signal {signal.Signals(-code).name}"
    return f"it exited with status {code}" if code else None


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the compiler's process group; SIGKILL it if it does not go."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(_KILL_GRACE_S)
            return
        except subprocess.TimeoutExpired:
            continue


def _failure(argv: list[str], problem: str, outputs: Path, log: Path, root: Path) -> str:
    kept = (
        f"the last good artefacts in {_rel(outputs, root)} were kept"
        if outputs.exists()
        else f"there are no earlier artefacts in {_rel(outputs, root)}"
    )
    lines = [f"compiler failed: {problem}; {kept}", f"command: {shlex.join(argv)}"]
    last = tail(log)
    if last:
        lines.append(f"last {len(last)} line(s) of {_rel(log, root)}:")
        lines += [f"  {line}" for line in last]
    return "\n".join(lines)


def tail(path: Path, count: int = TAIL_LINES) -> list[str]:
    """The last ``count`` lines of a text file (empty when it cannot be read)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError:
        return []
    return text.splitlines()[-count:]


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def _remove_leftovers(outputs: Path) -> None:
    """Folders a killed compile of this model left beside its outputs."""
    for prefix in (_NEW, _OLD):
        for folder in outputs.parent.glob(f".{glob.escape(outputs.name)}{prefix}*"):
            shutil.rmtree(folder, ignore_errors=True)


def _swap_in(fresh: Path, outputs: Path) -> None:
    """Put ``fresh`` where ``outputs`` is, in one step where the kernel allows it."""
    if outputs.exists() and _exchange(fresh, outputs):
        shutil.rmtree(fresh, ignore_errors=True)  # now holds the old artefacts
        return
    if outputs.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{outputs.name}{_OLD}", dir=outputs.parent))
        os.rename(outputs, old / outputs.name)
        os.rename(fresh, outputs)
        shutil.rmtree(old, ignore_errors=True)
        return
    os.rename(fresh, outputs)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False if unsupported."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd = -100
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), os.fspath(b))
