"""Tests for ane_build.watch with real files, real observers and a fake build callback."""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from ane_build.build.watch import Watcher, WatchLimitError
from ane_build.errors import ConfigError

QUIET = 0.5  # how long "nothing else happens" is observed; several debounce periods


class Recorder:
    """A fake build: records each call's models on entry, then runs an optional hook."""

    def __init__(self, hook: Callable[[frozenset[str] | None], None] | None = None) -> None:
        self.calls: list[frozenset[str] | None] = []
        self._cond = threading.Condition()
        self._hook = hook

    def __call__(self, models: frozenset[str] | None) -> None:
        with self._cond:
            self.calls.append(models)
            self._cond.notify_all()
        if self._hook is not None:
            self._hook(models)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[frozenset[str] | None]:
        with self._cond:
            self._cond.wait_for(lambda: len(self.calls) >= count, timeout)
            return list(self.calls)

    def settled(self) -> list[frozenset[str] | None]:
        """The calls after QUIET seconds without new ones."""
        time.sleep(QUIET)
        return list(self.calls)


class Project:
    """Two models, a and b: a source each, an artefact folder each, outputs under build/."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for folder in ("configs", "models", "out/a", "out/b", "build"):
            (root / folder).mkdir(parents=True)
        (root / "configs/a.toml").write_text('source = "models/a.onnx"\n')
        (root / "configs/b.toml").write_text('source = "models/b.onnx"\n')
        for name in ("a", "b"):
            (root / f"models/{name}.onnx").write_bytes(b"onnx")
            (root / f"out/{name}/{name}.tsk").write_bytes(b"tsk")
        self.extra_inputs: dict[str, list[Path]] = {"a": [], "b": []}
        self.extra_roots: dict[str, list[Path]] = {"a": [], "b": []}

    def inputs(self) -> Mapping[str, Collection[Path]]:
        return {
            name: [self.root / f"models/{name}.onnx", self.root / f"out/{name}/{name}.tsk"]
            + self.extra_inputs[name]
            for name in ("a", "b")
        }

    def roots(self) -> Mapping[str, Collection[Path]]:
        return {name: [self.root / f"out/{name}"] + self.extra_roots[name] for name in ("a", "b")}

    def ignore(self, path: Path) -> bool:
        return path.is_relative_to(self.root / "build")


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)


@pytest.fixture
def watch(project: Project) -> Iterator[Callable[..., tuple[Watcher, Recorder]]]:
    """Start a watcher on ``project`` in a thread; stop and join it after the test."""
    running: list[tuple[threading.Thread, threading.Event]] = []
    errors: list[BaseException] = []

    def start(recorder: Recorder | None = None, **kwargs: Any) -> tuple[Watcher, Recorder]:
        recorder = recorder or Recorder()
        kwargs.setdefault("roots", project.roots)
        watcher = Watcher(
            inputs=project.inputs,
            build=recorder,
            config_dir=project.root / "configs",
            ignore=project.ignore,
            **kwargs,
        )
        stop = threading.Event()

        def target() -> None:
            try:
                watcher.run(stop)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        running.append((thread, stop))
        assert watcher.ready.wait(5), "watcher did not start"
        return watcher, recorder

    yield start
    for thread, stop in running:
        stop.set()
        thread.join(5)
        assert not thread.is_alive(), "watcher did not stop"
    assert not errors, errors


def write(path: Path, data: bytes = b"x") -> None:
    with open(path, "wb") as f:
        f.write(data)


def test_burst_of_20_writes_builds_once(project: Project, watch: Any) -> None:
    _, recorder = watch()
    target = project.root / "out/a/a.tsk"
    for i in range(20):
        write(target, b"x" * (i + 1))
        time.sleep(0.003)
    assert recorder.wait_for(1) == [frozenset({"a"})]
    assert recorder.settled() == [frozenset({"a"})]


def test_rename_into_place_builds_once_and_logs_the_trigger(
    project: Project, watch: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ane_build.build.watch")
    _, recorder = watch()
    tmp = project.root / "out/a/.a.tsk.tmp"
    write(tmp, b"new microcode")
    os.replace(tmp, project.root / "out/a/a.tsk")
    assert recorder.wait_for(1) == [frozenset({"a"})]
    assert recorder.settled() == [frozenset({"a"})]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("building")]
    assert lines == ["building a (changed: out/a/a.tsk)"]  # the temp name is no trigger


def test_half_written_file_waits_until_closed(project: Project, watch: Any) -> None:
    target = project.root / "out/a/a.tsk"
    sizes: list[int] = []
    _, recorder = watch(Recorder(lambda _: sizes.append(target.stat().st_size)))
    chunk = b"w" * 4096
    fd = os.open(target, os.O_WRONLY | os.O_TRUNC)
    try:
        for _ in range(5):  # about 1 s of slow writing, far longer than the debounce
            os.write(fd, chunk)
            time.sleep(0.2)
            assert recorder.calls == [], "built a file that is still being written"
    finally:
        os.close(fd)
    assert recorder.wait_for(1) == [frozenset({"a"})]
    assert recorder.settled() == [frozenset({"a"})]
    assert sizes == [5 * len(chunk)]  # the build saw the finished file


def test_changes_during_a_build_cause_exactly_one_follow_up(project: Project, watch: Any) -> None:
    release = threading.Event()
    first = threading.Event()

    def hold_first_build(_: frozenset[str] | None) -> None:
        if not first.is_set():
            first.set()
            release.wait(5)

    _, recorder = watch(Recorder(hold_first_build))
    write(project.root / "out/a/a.tsk", b"1")
    assert first.wait(5)
    for i in range(5):  # several changes to two models while the build runs
        write(project.root / "out/b/b.tsk", b"2" * (i + 1))
        write(project.root / "models/a.onnx", b"3" * (i + 1))
        time.sleep(0.05)
    time.sleep(0.3)  # well past the debounce: still no second build while the first runs
    assert recorder.calls == [frozenset({"a"})]
    release.set()
    assert recorder.wait_for(2) == [frozenset({"a"}), frozenset({"a", "b"})]
    assert recorder.settled() == [frozenset({"a"}), frozenset({"a", "b"})]


def test_only_affected_models_are_rebuilt(project: Project, watch: Any) -> None:
    _, recorder = watch()
    write(project.root / "models/b.onnx", b"new")
    assert recorder.wait_for(1) == [frozenset({"b"})]
    # A discovered artefact appearing in (or vanishing from) a root is a change for that model.
    write(project.root / "out/a/extra.bin", b"w")
    assert recorder.wait_for(2)[1] == frozenset({"a"})
    (project.root / "out/a/extra.bin").unlink()
    assert recorder.wait_for(3)[2] == frozenset({"a"})
    # A config change rebuilds everything.
    (project.root / "configs/a.toml").write_text('source = "models/a.onnx"\ntoolchain = "x"\n')
    assert recorder.wait_for(4)[3] is None
    assert len(recorder.settled()) == 4


def test_ignored_paths_do_not_trigger(
    project: Project, watch: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ane_build.build.watch")
    _, recorder = watch()
    write(project.root / "build/a_ane.onnx")  # our output (ignore callback)
    write(project.root / "out/a/.hidden")
    write(project.root / "out/a/partial.tmp")
    write(project.root / "out/a/.a.tsk.tmp")
    write(project.root / "out/a/backup~")
    (project.root / "out/a/.cache").mkdir()
    write(project.root / "out/a/.cache/blob")
    write(project.root / "configs/schema.json")
    write(project.root / "configs/.a.toml.swp")
    write(project.root / "models/unrelated.onnx")  # in a watched folder, but nobody's input
    with open(project.root / "models/a.onnx", "rb") as f:  # reading an input changes nothing
        f.read()
    assert recorder.settled() == []
    write(project.root / "out/a/a.tsk", b"real")
    assert recorder.wait_for(1) == [frozenset({"a"})]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("building")]
    assert lines == ["building a (changed: out/a/a.tsk)"]


def test_polling_mode_sees_a_rename(project: Project, watch: Any) -> None:
    _, recorder = watch(poll=True, poll_interval=0.1)
    tmp = project.root / "out/b/.b.tsk.tmp"
    write(tmp, b"polled")
    os.replace(tmp, project.root / "out/b/b.tsk")
    assert recorder.wait_for(1) == [frozenset({"b"})]
    assert recorder.settled() == [frozenset({"b"})]


def test_missing_folders_are_watched_once_they_exist(project: Project, watch: Any) -> None:
    fresh = project.root / "out/new/deep"
    project.extra_roots["b"].append(fresh)
    project.extra_inputs["a"].append(fresh / "shared.bin")
    _, recorder = watch()
    fresh.mkdir(parents=True)
    assert recorder.wait_for(1) == [frozenset({"a", "b"})]
    # The watch moved down into the new folder: files written there are now seen.
    write(fresh / "shared.bin")
    assert recorder.wait_for(2)[1] == frozenset({"a", "b"})
    write(fresh / "only-b.bin")
    assert recorder.wait_for(3)[2] == frozenset({"b"})
    assert len(recorder.settled()) == 3


def test_inputs_are_queried_again_after_each_build(project: Project, watch: Any) -> None:
    extra = project.root / "models/extra.onnx"

    def discover(_: frozenset[str] | None) -> None:
        if not project.extra_inputs["b"]:
            project.extra_inputs["b"].append(extra)

    _, recorder = watch(Recorder(discover))
    write(extra)  # nobody's input yet
    assert recorder.settled() == []
    write(project.root / "models/a.onnx", b"new")
    assert recorder.wait_for(1) == [frozenset({"a"})]
    time.sleep(0.1)  # the refresh right after the build
    write(extra, b"now an input")
    assert recorder.wait_for(2)[1] == frozenset({"b"})


def test_failing_build_keeps_watching(project: Project, watch: Any) -> None:
    failures: list[Exception] = [ConfigError("configs/a.toml: broken"), RuntimeError("bug")]

    def fail_twice(_: frozenset[str] | None) -> None:
        if failures:
            raise failures.pop(0)

    _, recorder = watch(Recorder(fail_twice))
    for count in (1, 2, 3):
        write(project.root / "out/a/a.tsk", str(count).encode())
        assert len(recorder.wait_for(count)) == count
    assert failures == []
    assert recorder.settled() == [frozenset({"a"})] * 3


def test_ctrl_c_returns_cleanly(project: Project) -> None:
    def interrupt(_: frozenset[str] | None) -> None:
        raise KeyboardInterrupt

    before = threading.active_count()
    watcher = Watcher(
        inputs=project.inputs,
        build=interrupt,
        config_dir=project.root / "configs",
        build_first=True,
    )
    assert watcher.run() is True  # returns instead of raising KeyboardInterrupt
    assert watcher.builds == 1
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == before, "observer threads left running"


class FailingObserver:
    """Stands in for a watchdog observer whose inotify calls fail."""

    def __init__(self, err: int, where: str) -> None:
        self.err = err
        self.where = where
        self.stopped = False

    def _fail(self) -> None:
        raise OSError(self.err, os.strerror(self.err))

    def schedule(self, *args: Any, **kwargs: Any) -> object:
        if self.where == "schedule":
            self._fail()
        return object()

    def unschedule(self, watch: object) -> None:
        pass

    def start(self) -> None:
        if self.where == "start":
            self._fail()

    def stop(self) -> None:
        self.stopped = True

    def is_alive(self) -> bool:
        return False

    def join(self, timeout: float | None = None) -> None:
        pass


@pytest.mark.parametrize("where", ["create", "schedule", "start"])
@pytest.mark.parametrize(
    ("err", "setting"),
    [
        (errno.ENOSPC, "fs.inotify.max_user_watches"),
        (errno.EMFILE, "fs.inotify.max_user_instances"),
    ],
)
def test_inotify_limit_is_a_clear_error(
    project: Project, where: str, err: int, setting: str
) -> None:
    observer = FailingObserver(err, where)
    recorder = Recorder()

    def factory() -> FailingObserver:
        if where == "create":
            observer._fail()
        return observer

    watcher = Watcher(
        inputs=project.inputs,
        build=recorder,
        config_dir=project.root / "configs",
        observer_factory=factory,  # type: ignore[arg-type]
        build_first=True,
    )
    with pytest.raises(WatchLimitError) as info:
        watcher.run()
    message = str(info.value)
    assert setting in message
    assert f"sudo sysctl {setting}=" in message
    assert "--poll" in message
    assert isinstance(info.value, ConfigError)
    assert isinstance(info.value.__cause__, OSError)
    # An observer that was created is stopped; one whose creation failed has nothing to stop.
    assert observer.stopped == (where != "create")
    assert recorder.calls == []


def test_other_observer_errors_are_not_disguised(project: Project) -> None:
    observer = FailingObserver(errno.EIO, "start")
    watcher = Watcher(
        inputs=project.inputs,
        build=Recorder(),
        config_dir=project.root / "configs",
        observer_factory=lambda: observer,  # type: ignore[arg-type,return-value]
    )
    with pytest.raises(OSError) as info:
        watcher.run()
    assert not isinstance(info.value, WatchLimitError)


@pytest.mark.parametrize(
    "kwargs", [{"debounce": -1.0}, {"settle": -0.1}, {"poll_interval": 0.0}, {"stall": 0.0}]
)
def test_bad_timings_are_rejected(project: Project, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="watch: "):
        Watcher(inputs=project.inputs, build=Recorder(), config_dir=project.root, **kwargs)
