"""Concurrent builds (issue 6, item 4): watch mode beside manual builds, two doit at once.

The project lock serializes builds; the one that waits says so on stderr, naming the holder's pid.
Afterwards no state is corrupt (doit's sqlite DB, the digest cache, the graph, the records all
read back, and ``why`` says everything is up to date), and no change is lost: an input rewritten
while a build runs ends up in its container through a follow-up build. To make the overlap
certain rather than likely on a loaded machine, the build holding the lock is stopped (SIGSTOP)
until the other one has said that it waits.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ane_build.build.context import BuildContext
from ane_build.build.reasons import why
from ane_build.build.runner import run_doit
from ane_build.build.state import project_lock
from ane_build.container.metadata import parse_ane_metadata
from ane_build.container.verify import verify_container
from tests.helpers import (
    TIMEOUT,
    all_temps,
    check_state,
    converted,
    default_sigint,
    make_project,
    set_toolchain,
    sha256_file,
    wait_for,
)

WAITING = "waiting for the build lock"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, list[str]]]:
    """A built project of six models (built in this process: quicker than a doit process)."""
    root = tmp_path / "proj"
    names = make_project(root)
    monkeypatch.chdir(root)  # doit's state file is relative to the working folder
    assert run_doit(root, []) == 0
    yield root, names


class Proc:
    """A background process whose stdout and stderr go to files (never a full pipe)."""

    def __init__(self, root: Path, label: str, args: list[str]) -> None:
        self.out = root.parent / f"{label}.out"
        self.err = root.parent / f"{label}.err"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.popen = subprocess.Popen(
                args, cwd=root, stdout=out, stderr=err, preexec_fn=default_sigint
            )
        self.pid = self.popen.pid

    def stdout(self) -> str:
        return self.out.read_text()

    def stderr(self) -> str:
        return self.err.read_text()

    def wait(self) -> int:
        return self.popen.wait(TIMEOUT)

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)
            self.popen.kill()
            self.popen.wait()


@contextlib.contextmanager
def processes() -> Iterator[list[Proc]]:
    """Every process started in the block is killed at its end, whatever happened."""
    started: list[Proc] = []
    try:
        yield started
    finally:
        for proc in started:
            proc.stop()


def doit_proc(root: Path, label: str, *args: str) -> Proc:
    return Proc(root, label, [sys.executable, "-m", "doit", *args])


def lock_holder(root: Path) -> int | None:
    """The pid holding the project's build lock right now, or None when it is free."""
    fd = os.open(root / ".ane_build" / "lock", os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode().strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def rewrite_weights(root: Path, name: str, seed: int) -> str:
    """Replace a discovered weights file the way a compiler does (temp file, rename)."""
    path = root / "compiler-out" / name / f"{name}_weights.bin"
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_bytes(random.Random(seed).randbytes(path.stat().st_size))
    os.replace(tmp, path)
    return sha256_file(path)


def assert_settled(root: Path, names: list[str], weights: dict[str, str]) -> None:
    """No corrupt state, everything up to date, every change in its container."""
    check_state(root)
    reasons = why(BuildContext.load(root))
    assert sorted(reasons) == names
    assert all(not r for r in reasons.values()), reasons
    for name in names:
        output = root / "build" / f"{name}_ane.onnx"
        assert verify_container(output).ok, name
        if name in weights:
            assert parse_ane_metadata(output).weights_sha256 == weights[name], name
    assert all_temps(root) == []


def waits_for(proc: Proc, holder: int) -> bool:
    """Whether ``proc`` said on stderr that it waits for ``holder``."""
    return any(
        line.startswith(WAITING) and line.endswith(f"(held by pid {holder})...")
        for line in proc.stderr().splitlines()
    )


def test_the_waiting_doit_says_who_holds_the_lock(project: tuple[Path, list[str]]) -> None:
    """doit configures no logging: the message must still reach stderr (bare, via lastResort)."""
    root, names = project
    set_toolchain(root, "after the lock")
    with processes() as started:
        with project_lock(root):
            # This test process holds the lock: `doit` and `doit deploy` must both wait for it.
            started += [doit_proc(root, "doit"), doit_proc(root, "deploy", "deploy")]
            for proc in started:
                wait_for(
                    f"{proc.out.stem} to wait", functools.partial(waits_for, proc, os.getpid())
                )
            # Waiting means waiting: nothing was built while we held the lock.
            assert all(p.popen.poll() is None for p in started)
            for name in names:
                meta = parse_ane_metadata(root / "build" / f"{name}_ane.onnx")
                assert meta.toolchain != "after the lock"
        codes = [proc.wait() for proc in started]
    assert codes == [0, 0], [p.stdout() + p.stderr() for p in started]
    # Between them, each model was converted once: the second saw the first one's work.
    assert sorted(converted(started[0].stdout()) | converted(started[1].stdout())) == names
    assert not converted(started[0].stdout()) & converted(started[1].stdout())
    assert_settled(root, names, {})


def test_two_doit_processes_at_once(project: tuple[Path, list[str]]) -> None:
    root, names = project
    set_toolchain(root, "two at once")
    with processes() as started:
        first = doit_proc(root, "first")
        started.append(first)
        # Stop the first build in the middle, holding the lock.
        wait_for("the first build to convert", lambda: "convert:" in first.stdout())
        os.kill(first.pid, signal.SIGSTOP)
        assert lock_holder(root) == first.pid
        # A change made during that build.
        weights = {"m4": rewrite_weights(root, "m4", 1)}
        second = doit_proc(root, "second")
        started.append(second)
        wait_for("the second build to wait", lambda: waits_for(second, first.pid))
        os.kill(first.pid, signal.SIGCONT)
        code1, code2 = first.wait(), second.wait()
    # The first may refuse a model whose input moved under it; it says so and fails.
    assert code1 == 0 or "m4_weights.bin changed during the build; run again" in first.stdout()
    assert code2 == 0, second.stdout() + second.stderr()
    # Nothing lost: m4's new weights are in its container, whichever build put them there.
    assert_settled(root, names, weights)
    assert "m4" in converted(first.stdout()) | converted(second.stdout())


def test_a_waiting_doit_keeps_what_the_build_before_it_learnt(
    project: tuple[Path, list[str]],
) -> None:
    """The digest cache a waiting doit saves must include what the build it waited for hashed."""
    root, _ = project
    inputs = BuildContext.load(root).models

    def touch(name: str) -> None:
        for path in inputs[name].inputs:
            st = os.stat(path)
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))

    touch("m1")
    with processes() as started:
        with project_lock(root):
            second = doit_proc(root, "second", "convert:m2")
            started.append(second)
            wait_for("the second build to wait", lambda: waits_for(second, os.getpid()))
            # While it waits, a build in this process hashes m1's touched inputs, once.
            touch("m2")
            ctx = BuildContext.load(root)
            assert run_doit(root, ["convert:m1"], ctx) == 0
            assert ctx.cache.files_hashed == len(inputs["m1"].inputs)
        assert second.wait() == 0, second.stdout() + second.stderr()
    # Neither build's fingerprints were lost: nothing is read again.
    ctx = BuildContext.load(root)
    assert run_doit(root, [], ctx) == 0
    assert ctx.cache.bytes_read == 0 and ctx.cache.files_hashed == 0


def test_watch_mode_beside_manual_doit_and_doit_deploy(project: tuple[Path, list[str]]) -> None:
    root, names = project
    with processes() as started:
        watch = Proc(
            root,
            "watch",
            [sys.executable, "-m", "ane_build", "-v", "watch", "--no-initial-build"],
        )
        started.append(watch)
        wait_for("watch mode to start", lambda: "folder(s) for 6 model(s)" in watch.stderr())

        # A compiler drops new weights for m1: watch mode builds it and takes the lock.
        weights = {"m1": rewrite_weights(root, "m1", 2)}
        wait_for("watch mode's build", lambda: lock_holder(root) == watch.pid)
        os.kill(watch.pid, signal.SIGSTOP)
        # During that build: another model changes, and builds are started by hand.
        weights["m4"] = rewrite_weights(root, "m4", 3)
        manual = [doit_proc(root, "doit"), doit_proc(root, "deploy", "deploy")]
        started += manual
        for proc in manual:
            wait_for(f"{proc.out.stem} to wait", functools.partial(waits_for, proc, watch.pid))
        os.kill(watch.pid, signal.SIGCONT)
        codes = [proc.wait() for proc in manual]
        for proc, code in zip(manual, codes, strict=True):
            # A manual build may refuse m4 if it moved under it (then a follow-up builds it).
            assert code == 0 or "changed during the build" in proc.stdout(), proc.stdout()

        def settled() -> bool:
            reasons = why(BuildContext.load(root))
            return all(not r for r in reasons.values())

        wait_for("every change to be built", settled, timeout=60)
        # Let watch mode finish what it runs (builds are logged as they end), then stop it.
        last = -1
        while (builds := watch.stderr().count("watch: built")) != last:
            last = builds
            time.sleep(1.0)
        watch.popen.send_signal(signal.SIGINT)
        assert watch.wait() == 130, watch.stderr()[-3000:]
    assert "FAILED" not in "".join(
        line for line in watch.stderr().splitlines() if "watch: built" in line
    )
    assert_settled(root, names, weights)
