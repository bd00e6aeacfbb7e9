"""Crash safety: killed converters, interrupted doit runs and full disks (issue 6, item 3).

Every output must stay whole: the previous container (or none) after a kill, never a partial one;
temp files a killed writer leaves behind are removed by the next write of the same output, and
never while their writer lives; an interrupted ``doit`` leaves state the next run trusts, so it
rebuilds exactly the models that were not finished.

Scale with environment variables (defaults keep CI fast):
``CRASH_KILL_POINTS`` (converter SIGKILLs, default 30), ``CRASH_DOIT_KILL_POINTS`` (interrupted
doit runs, half SIGINT and half SIGKILL, default 4), ``CRASH_SEED`` (default 20240506).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from ane_build import _fs as atomicfile
from ane_build.cli import main as cli_main
from ane_build.container.metadata import parse_ane_metadata
from ane_build.container.verify import verify_container
from ane_build.container.writer import embed_ane_metadata
from ane_build.errors import ModelFileError
from ane_build.formats.payload import PayloadRef
from ane_build.synthetic.chains import make_chain
from tests.helpers import (
    TIMEOUT,
    all_temps,
    check_state,
    converted,
    default_sigint,
    make_project,
    relu_model,
    set_toolchain,
    sha256_file,
    wait_for,
)

KILL_POINTS = int(os.environ.get("CRASH_KILL_POINTS", "30"))
DOIT_KILL_POINTS = int(os.environ.get("CRASH_DOIT_KILL_POINTS", "4"))
SEED = int(os.environ.get("CRASH_SEED", "20240506"))
WEIGHTS_MIB = 64
TD_SIZE = 0x274


# -- helpers ---------------------------------------------------------------------------------


def temps(folder: Path, name: str | None = None) -> set[str]:
    """Temp files of ``name`` in ``folder`` (of any output when None), by our naming rule."""
    prefix = f".{name}." if name else "."
    try:
        return {n for n in os.listdir(folder) if n.startswith(prefix) and n.endswith(".tmp")}
    except FileNotFoundError:
        return set()


class Fingerprinted:
    """File digests, recomputed only when (inode, size, mtime, ctime) moved: a file no write
    touched keeps its bytes, and hashing 85 MiB after every kill would double the test's time."""

    def __init__(self) -> None:
        self._known: dict[tuple[int, int, int, int], str] = {}

    def digest(self, path: Path) -> str:
        st = path.stat()
        key = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if key not in self._known:
            self._known[key] = sha256_file(path)
        return self._known[key]


class Verified:
    """Containers known to be intact, by digest: identical bytes verify identically."""

    def __init__(self) -> None:
        self.digests: set[str] = set()
        self._files = Fingerprinted()

    def check(self, path: Path, weights_sha256: str | None = None) -> str:
        """Assert ``path`` parses and verifies; return its digest."""
        digest = self._files.digest(path)
        meta = parse_ane_metadata(path)
        if weights_sha256 is not None:
            assert meta.weights_sha256 == weights_sha256
        if digest not in self.digests:
            report = verify_container(path)
            assert report.ok, report.summary()
            self.digests.add(digest)
        return digest


# -- converter killed with SIGKILL -----------------------------------------------------------


@pytest.fixture(scope="module")
def big_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small model, its microcode and two different weights files of WEIGHTS_MIB MiB."""
    folder = tmp_path_factory.mktemp("big")
    rng = random.Random(SEED)
    a = rng.randbytes(WEIGHTS_MIB << 20)
    (folder / "a.bin").write_bytes(a)
    (folder / "b.bin").write_bytes(b"other weights" + a[13:])
    (folder / "m.tsk").write_bytes(make_chain(2))
    relu_model(folder / "m.onnx")
    return {
        "model": folder / "m.onnx",
        "microcode": folder / "m.tsk",
        "a": folder / "a.bin",
        "b": folder / "b.bin",
    }


def converter(inputs: dict[str, Path], weights: Path, output: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "ane_build",
        "convert",
        str(inputs["model"]),
        "--microcode",
        str(inputs["microcode"]),
        "--td-size",
        hex(TD_SIZE),
        "--td-count",
        "2",
        "--weights",
        str(weights),
        "-o",
        str(output),
    ]


def kill_sequence(inputs: dict[str, Path], out_dir: Path, points: int, seed: int) -> dict[str, int]:
    """SIGKILL the converter ``points`` times while it rewrites one output; check after each."""
    rng = random.Random(seed)
    out_dir.mkdir()
    output = out_dir / "m_ane.onnx"
    weights_sha = {key: sha256_file(inputs[key]) for key in ("a", "b")}
    verified = Verified()
    outcomes = {"killed mid-write": 0, "killed after the rename": 0, "completed": 0}

    def run(weights: str, at: float | None) -> int:
        """Start the converter and SIGKILL it once its temp file holds ``at`` times the size
        of a whole output (above 1: right after the rename); None lets it finish."""
        stale = temps(out_dir, output.name)
        proc = subprocess.Popen(
            converter(inputs, inputs[weights], output),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:

            def own_temp() -> set[str]:
                if proc.poll() is not None:
                    err = proc.stderr.read().decode()  # type: ignore[union-attr]
                    pytest.fail(f"converter exited with {proc.returncode} early: {err}")
                return temps(out_dir, output.name) - stale

            (tmp,) = wait_for("the converter's temp file", own_temp)
            # The dead writers' temp files went before the new one was created.
            assert not stale & temps(out_dir, output.name), "a dead writer's temp file survived"
            if at is not None:

                def reached() -> bool:
                    try:
                        return os.stat(out_dir / tmp).st_size >= at * whole
                    except FileNotFoundError:
                        return True  # renamed into place

                wait_for("the kill point", lambda: reached() or proc.poll() is not None)
                proc.kill()
            return proc.wait(TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stderr.close()  # type: ignore[union-attr]

    # Killed as soon as it starts writing, before any output existed: there is still none.
    whole = 1 << 40
    assert run("a", 0.0) == -signal.SIGKILL and not output.exists()
    assert run("a", None) == 0 and not temps(out_dir, output.name)
    whole = output.stat().st_size
    good, content = verified.check(output, weights_sha["a"]), "a"

    for _ in range(points):
        new = "b" if content == "a" else "a"
        # Seeded points spread over the write, and some just after the rename; by bytes
        # written rather than by time, so a slow or loaded machine kills at the same places.
        code = run(new, rng.uniform(0.0, 1.15))
        assert code in (0, -signal.SIGKILL)
        outcomes["completed"] += code == 0
        # Parses and verifies after every kill: the old container or the new one, whole.
        digest = verified.check(output)
        if digest == good:
            # Killed before the rename: the previous container, untouched.
            assert parse_ane_metadata(output).weights_sha256 == weights_sha[content]
            assert code != 0
            outcomes["killed mid-write"] += 1
            # A SIGKILLed writer cannot remove its temp file; the next write must (see run).
            assert temps(out_dir, output.name)
        else:
            # Renamed into place: the new container, whole (completed, or killed just after).
            verified.check(output, weights_sha[new])
            outcomes["killed after the rename"] += code != 0
            good, content = digest, new
    assert run(content, None) == 0
    assert os.listdir(out_dir) == [output.name], "the next build must leave no temp file"
    verified.check(output, weights_sha[content])
    outcomes["killed before any output"] = 1
    return outcomes


def test_sigkilled_converter_never_leaves_a_partial_output(
    big_inputs: dict[str, Path], tmp_path: Path
) -> None:
    total = kill_sequence(big_inputs, tmp_path / "out", KILL_POINTS, SEED)
    print(f"\nconverter: {KILL_POINTS} seeded kill points + 1 at the start: {total}")
    # The seeded points span the write; most kills must land inside it or this proves little.
    assert total["killed mid-write"] >= max(1, KILL_POINTS // 4), total


# -- temp file cleanup rule ------------------------------------------------------------------


def small_embed(source: Path, output: Path, weights: bytes = b"w" * 1000) -> None:
    embed_ane_metadata(
        source,
        output,
        microcode=PayloadRef.from_bytes(make_chain(2)),
        td_size=TD_SIZE,
        td_count=2,
        weights=PayloadRef.from_bytes(weights),
    )


def test_cleanup_spares_a_live_writer_and_foreign_files(
    big_inputs: dict[str, Path], tmp_path: Path
) -> None:
    output = tmp_path / "m_ane.onnx"
    # An abandoned temp file (no process holds its lock) and look-alikes that are not ours.
    abandoned = tmp_path / ".m_ane.onnx.k1ll3d00.tmp"
    abandoned.write_bytes(b"half a container")
    decoys = [
        ".m_ane.onnx.tmp",  # no random part
        ".m_ane.onnx.a.b.c.tmp",  # dots in the middle: not mkstemp's
        "m_ane.onnx.abcdefgh.tmp",  # not hidden
        ".other_ane.onnx.abcdefgh.tmp",  # another output's
        ".m_ane.onnx.abcdefgh.tmp.bak",
    ]
    for name in decoys:
        (tmp_path / name).write_bytes(b"not ours")
    (tmp_path / ".m_ane.onnx.dir00000.tmp").mkdir()  # not a regular file
    keep = tmp_path / "keep.bin"
    keep.write_bytes(b"symlink target")
    (tmp_path / ".m_ane.onnx.link0000.tmp").symlink_to(keep)

    planted = temps(tmp_path, output.name)
    # A live writer: a converter stopped in the middle of its write, holding its lock.
    proc = subprocess.Popen(
        converter(big_inputs, big_inputs["a"], output),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        live = wait_for("the converter's temp file", lambda: temps(tmp_path, output.name) - planted)
        # Bytes in it: the writer holds its lock (taken before the first byte), so stopping it
        # now cannot catch it in the instant between creating the file and locking it.
        wait_for("the first bytes", lambda: all((tmp_path / n).stat().st_size for n in live))
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            # A second writer of the same output, by hand, while the first is alive.
            small_embed(big_inputs["model"], output)
            assert live <= temps(tmp_path, output.name), "a live writer's temp file was removed"
            assert not abandoned.exists(), "an abandoned temp file was kept"
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        assert proc.wait(TIMEOUT) == 0  # the first writer finishes unharmed, and wins
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    meta = parse_ane_metadata(output)
    assert meta.weights_len == WEIGHTS_MIB << 20
    for name in decoys:
        assert (tmp_path / name).read_bytes() == b"not ours"
    assert (tmp_path / ".m_ane.onnx.dir00000.tmp").is_dir()
    assert (tmp_path / ".m_ane.onnx.link0000.tmp").is_symlink() and keep.exists()
    assert not live & temps(tmp_path, output.name)


def test_a_cleaner_winning_the_race_before_the_lock_costs_a_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer's cleanup may take a temp file between mkstemp and flock: retry, not fail."""
    target = tmp_path / "state.json"
    real_mkstemp = tempfile.mkstemp
    calls: list[str] = []

    def mkstemp_then_cleaner(**kwargs: Any) -> tuple[int, str]:
        fd, path = real_mkstemp(**kwargs)
        calls.append(path)
        if len(calls) == 1:
            # The other writer's cleanup runs in the window: it can lock the file, so it goes.
            assert atomicfile.remove_stale_temps(target) == [Path(path)]
        return fd, path

    monkeypatch.setattr(atomicfile, "mkstemp", mkstemp_then_cleaner)
    fd, tmp = atomicfile.create_temp(target)
    try:
        assert len(calls) == 2 and tmp == calls[1] and os.path.exists(tmp)
        # Held: a cleaner now leaves it alone.
        assert atomicfile.remove_stale_temps(target) == []
        assert os.path.exists(tmp)
    finally:
        os.close(fd)
        os.unlink(tmp)


# -- interrupted doit --------------------------------------------------------------------------


def doit(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "doit", *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def why_cli(
    root: Path, capsys: pytest.CaptureFixture[str], *, process: bool = False
) -> dict[str, list[str]]:
    """``python -m ane_build why``, in this process or a new one: reasons per model."""
    if process:
        proc = subprocess.run(
            [sys.executable, "-m", "ane_build", "why"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
    else:
        capsys.readouterr()
        assert cli_main(["why", "--project", str(root)]) == 0
        lines = capsys.readouterr().out.splitlines()
    reasons: dict[str, list[str]] = {}
    for line in lines[:-1]:
        name, _, reason = line.partition(": ")
        reasons.setdefault(name, [])
        if reason != "up to date":
            reasons[name].append(reason)
    stale = sum(bool(r) for r in reasons.values())
    assert lines[-1] == f"{stale} of {len(reasons)} model(s) would be rebuilt or redeployed"
    return reasons


@pytest.fixture
def built_project(tmp_path: Path) -> tuple[Path, list[str]]:
    """A fully built project."""
    root = tmp_path / "proj"
    names = make_project(root)
    proc = doit(root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root, names


def tasks_started(text: str) -> int:
    """Model tasks (convert, verify, deploy) doit has started, from its output."""
    return sum(
        line.startswith((".  convert:", ".  verify:", ".  deploy:")) for line in text.splitlines()
    )


def interrupt_doit(root: Path, sig: signal.Signals, tasks: int, delay: float) -> str:
    """Run ``doit``; ``delay`` s after its ``tasks``-th model task started, send ``sig``."""
    log = root / "interrupted.out"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "doit"],
            cwd=root,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=default_sigint,
        )
        try:
            wait_for(
                f"model task {tasks}",
                lambda: tasks_started(log.read_text()) >= tasks or proc.poll() is not None,
            )
            time.sleep(delay)
            proc.send_signal(sig)
            proc.wait(TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = log.read_text()
    log.unlink()
    return text


def test_interrupted_doit_rebuilds_exactly_what_was_not_finished(
    built_project: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    root, names = built_project
    rng = random.Random(SEED + 1)
    verified = Verified()
    tally = {"SIGINT": 0, "SIGKILL": 0, "finished before the kill": 0, "rebuilt after": 0}
    for point in range(DOIT_KILL_POINTS):
        sig = signal.SIGINT if point % 2 == 0 else signal.SIGKILL
        toolchain = f"build {point + 1}"
        set_toolchain(root, toolchain)  # every model is stale now
        if point == 1:
            # As the second convert starts: some models done and some not, for certain.
            killed_out = interrupt_doit(root, sig, 2, 0.0)
        else:
            # In a seeded model task (convert, verify or deploy), a few ms into it: counted in
            # tasks rather than seconds, so a loaded machine kills at the same places.
            task = rng.randint(1, 3 * len(names))
            killed_out = interrupt_doit(root, sig, task, rng.uniform(0.0, 0.03))
        tally[sig.name] += 1
        finished = converted(killed_out)
        tally["finished before the kill"] += len(finished)

        check_state(root)
        # The last point asks a separate `why` process, like a user would.
        reasons = why_cli(root, capsys, process=point == DOIT_KILL_POINTS - 1)
        assert sorted(reasons) == names
        stale = {n for n, rs in reasons.items() if any(r.startswith("convert:") for r in rs)}
        assert not finished & stale, f"finished before the kill yet stale: {finished & stale}"
        before = {}
        for name in names:
            output = root / "build" / f"{name}_ane.onnx"
            verified.check(output)  # intact: the old container or the new one, never a part
            if name not in stale:
                # `why` says up to date: the container really is the one this config asks for.
                assert parse_ane_metadata(output).toolchain == toolchain, name
            before[name] = output.stat()

        follow = doit(root)
        assert follow.returncode == 0, follow.stdout + follow.stderr
        rebuilt = converted(follow.stdout)
        assert rebuilt == stale, (point, sig.name, killed_out, follow.stdout)
        tally["rebuilt after"] += len(rebuilt)
        for name in names:
            output = root / "build" / f"{name}_ane.onnx"
            st = output.stat()
            if name not in stale:
                assert (st.st_ino, st.st_mtime_ns) == (
                    before[name].st_ino,
                    before[name].st_mtime_ns,
                )
            assert parse_ane_metadata(output).toolchain == toolchain
            verified.check(output)
        check_state(root)
        assert all(not r for r in why_cli(root, capsys).values())
        # Outputs and deploy records: nothing left. The state folder's digest cache is cleaned
        # by its next save, which a follow-up that rebuilt something is sure to make.
        left = all_temps(root)
        if not rebuilt:
            left = [t for t in left if not t.startswith(".ane_build/")]
        assert left == [], "temp files left after the follow-up build"
    print(f"\ndoit: {DOIT_KILL_POINTS} interrupted runs: {tally}")
    if DOIT_KILL_POINTS >= 2:
        assert tally["finished before the kill"] > 0 and tally["rebuilt after"] > 0, tally


def test_doit_state_is_committed_per_task_never_half_way(tmp_path: Path) -> None:
    """A kill in the middle of doit saving a task's state leaves none of it, not a part."""
    from doit.dependency import JSONCodec

    from ane_build.build.plugins import WriteThroughSqliteDB

    path = tmp_path / "state" / "doit.sqlite"
    db = WriteThroughSqliteDB(str(path), JSONCodec())
    try:

        def stored() -> dict[str, Any]:
            with contextlib.closing(sqlite3.connect(path)) as other:
                rows = other.execute("select task_id, task_data from doit").fetchall()
            return {task: json.loads(data) for task, data in rows}

        # The order doit's save_success uses: values, checker, each file_dep, then "deps:".
        db.set("convert:a", "_values_:", {"output": [1, 2, "x"]})
        db.set("convert:a", "checker:", "FingerprintChecker")
        db.set("convert:a", "/in/a.bin", [1, 2, "y"])
        assert stored() == {}, "committed before the task's state was complete"
        db.set("convert:a", "deps:", ["/in/a.bin"])
        assert stored()["convert:a"]["/in/a.bin"] == [1, 2, "y"]
        db.set("convert:b", "ignore:", "1")  # `doit ignore` writes this alone
        assert stored()["convert:b"] == {"ignore:": "1"}
    finally:
        db.dump()


def test_a_build_doit_forgot_is_kept_not_redone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Killed after our build record but before doit's commit: the container is kept."""
    from ane_build.build.runner import run_doit

    root = tmp_path / "proj"
    names = make_project(root, models=3)
    monkeypatch.chdir(root)
    assert run_doit(root, []) == 0
    before = {n: (root / "build" / f"{n}_ane.onnx").stat() for n in names}
    # What such a kill leaves: our records say built, doit's state has no trace of the task.
    with contextlib.closing(sqlite3.connect(root / ".ane_build" / "doit.sqlite")) as db:
        db.execute("delete from doit where task_id = 'convert:m0'")
        db.commit()
    assert all(not r for r in why_cli(root, capsys).values())
    capsys.readouterr()
    assert run_doit(root, []) == 0
    out = capsys.readouterr().out
    assert converted(out) == set(), out
    assert "convert:m0: build/m0_ane.onnx is up to date per its build record; kept" in out
    for name in names:
        st = (root / "build" / f"{name}_ane.onnx").stat()
        assert (st.st_ino, st.st_mtime_ns) == (before[name].st_ino, before[name].st_mtime_ns)
    # doit has its state back: the next run does not even ask.
    assert run_doit(root, []) == 0
    assert "convert:m0" not in capsys.readouterr().out.replace("-- convert:m0", "")
    # An output that differs from its record is rebuilt, never kept.
    with contextlib.closing(sqlite3.connect(root / ".ane_build" / "doit.sqlite")) as db:
        db.execute("delete from doit where task_id = 'convert:m1'")
        db.commit()
    with open(root / "build" / "m1_ane.onnx", "ab") as f:
        f.write(b"\0")
    assert run_doit(root, []) == 0
    assert converted(capsys.readouterr().out) == {"m1"}


# -- full disk -------------------------------------------------------------------------------


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (needs root and mount); skipped where it cannot be mounted."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    try:
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1M,mode=0755", "tmpfs", str(mnt)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except OSError as exc:
        pytest.skip(f"cannot mount a tmpfs: {exc}")
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def test_full_disk_on_a_real_tmpfs(
    tiny_fs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = relu_model(tmp_path / "m.onnx")
    output = tiny_fs / "m_ane.onnx"
    small_embed(source, output)
    previous = sha256_file(output)
    weights = tmp_path / "w.bin"
    weights.write_bytes(random.Random(SEED).randbytes(2 << 20))  # twice the file system
    code = cli_main(
        [
            "convert",
            str(source),
            "--microcode",
            str(write_chain(tmp_path)),
            "--td-size",
            hex(TD_SIZE),
            "--td-count",
            "2",
            "--weights",
            str(weights),
            "-o",
            str(output),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert str(output) in err and "No space left on device (ENOSPC)" in err, err
    assert sha256_file(output) == previous
    assert verify_container(output).ok
    assert os.listdir(tiny_fs) == [output.name], "the temp file must be gone"

    # A killed writer's leftover fills the disk: the next write removes it first, and fits.
    leftover = tiny_fs / ".m_ane.onnx.d34dd34d.tmp"
    with open(leftover, "wb", buffering=0) as f, contextlib.suppress(OSError):
        while f.write(bytes(64 << 10)):
            pass
    assert shutil.disk_usage(tiny_fs).free < 16 << 10
    small_embed(source, output, weights=b"x" * 2000)
    assert os.listdir(tiny_fs) == [output.name]
    assert parse_ane_metadata(output).weights_len == 2000


def write_chain(folder: Path) -> Path:
    path = folder / "m.tsk"
    path.write_bytes(make_chain(2))
    return path


class _FullDisk:
    """A file that takes ``room`` bytes, then fails every write with ENOSPC, like a full disk."""

    def __init__(self, raw: BinaryIO, room: int) -> None:
        self._raw = raw
        self.room = room

    def write(self, data: bytes) -> int:
        if len(data) > self.room:
            self._raw.write(bytes(data[: self.room]))
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self._raw.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self._raw.close()


@pytest.mark.parametrize("room", [0, 100, 3 << 20])
def test_full_disk_through_the_output_seam(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, room: int
) -> None:
    """ENOSPC at the start, in the head and deep in the payload (runs without root, too)."""
    source = relu_model(tmp_path / "m.onnx")
    output = tmp_path / "out" / "m_ane.onnx"
    output.parent.mkdir()
    small_embed(source, output)
    previous = sha256_file(output)
    disks: list[_FullDisk] = []

    def full(fd: int) -> _FullDisk:
        disks.append(_FullDisk(os.fdopen(fd, "wb"), room))
        return disks[-1]

    monkeypatch.setattr(atomicfile, "open_output", full)
    with pytest.raises(ModelFileError) as info:
        small_embed(source, output, weights=random.Random(room).randbytes(8 << 20))
    assert disks and disks[0].room == 0
    assert str(output) in str(info.value) and "ENOSPC" in str(info.value)
    assert "No space left on device" in str(info.value)
    assert sha256_file(output) == previous
    assert os.listdir(output.parent) == [output.name]
