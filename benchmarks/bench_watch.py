"""Watch-mode latency and coalescing, with a fake build that copies one artefact.

Measures, in a temporary project:
- the median time from an artefact's rename into place to the build callback finishing
  (target: under 0.5 s), over 20 trials, with inotify and (for reference) with polling;
- how many builds a burst of 20 writes causes (target: exactly 1).

Run: python benchmarks/bench_watch.py [--trials N]. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Collection, Mapping
from pathlib import Path

from ane_build.build.watch import Watcher

LATENCY_TARGET = 0.5
BURST = 20


class Bench:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.art = root / "compiler-out/relu"
        self.out = root / "build"
        for folder in (root / "configs", root / "models", self.art, self.out):
            folder.mkdir(parents=True, exist_ok=True)
        (root / "configs/relu.toml").write_text('source = "models/relu.onnx"\n')
        (root / "models/relu.onnx").write_bytes(b"\0" * 4096)
        (self.art / "relu.tsk").write_bytes(b"\0" * 4096)
        self.builds = 0
        self.done = threading.Event()
        self.finished_at = 0.0

    def inputs(self) -> Mapping[str, Collection[Path]]:
        return {"relu": [self.root / "models/relu.onnx", self.art / "relu.tsk"]}

    def roots(self) -> Mapping[str, Collection[Path]]:
        return {"relu": [self.art]}

    def build(self, models: frozenset[str] | None) -> None:
        tmp = self.out / ".relu_ane.onnx.tmp"
        shutil.copyfile(self.art / "relu.tsk", tmp)
        os.replace(tmp, self.out / "relu_ane.onnx")
        self.builds += 1
        self.finished_at = time.perf_counter()
        self.done.set()

    def rename_into_place(self, payload: bytes) -> float:
        tmp = self.art / ".relu.tsk.tmp"
        tmp.write_bytes(payload)
        self.done.clear()
        start = time.perf_counter()
        os.replace(tmp, self.art / "relu.tsk")
        if not self.done.wait(5):
            return float("inf")
        return self.finished_at - start


def run_watcher(
    bench: Bench, **kwargs: object
) -> tuple[Watcher, threading.Event, threading.Thread]:
    stop = threading.Event()
    watcher = Watcher(
        inputs=bench.inputs,
        roots=bench.roots,
        build=bench.build,
        config_dir=bench.root / "configs",
        ignore=lambda p: p.is_relative_to(bench.out),
        **kwargs,  # type: ignore[arg-type]
    )
    thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
    thread.start()
    if not watcher.ready.wait(10):
        sys.exit("watcher did not start")
    return watcher, stop, thread


def latency(trials: int, **kwargs: object) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(Path(tmp))
        _, stop, thread = run_watcher(bench, **kwargs)
        times = []
        for i in range(trials):
            times.append(bench.rename_into_place(i.to_bytes(4, "little") * 1024))
            time.sleep(0.05)
        stop.set()
        thread.join(5)
    return times


def burst_builds() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(Path(tmp))
        _, stop, thread = run_watcher(bench)
        target = bench.art / "relu.tsk"
        for i in range(BURST):
            with open(target, "wb") as f:
                f.write(bytes([i]) * 65536)
            time.sleep(0.005)
        bench.done.wait(5)
        time.sleep(1.0)  # anything still to come would arrive well within this
        stop.set()
        thread.join(5)
        return bench.builds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()

    ok = True
    inotify = latency(args.trials)
    median = statistics.median(inotify)
    passed = median < LATENCY_TARGET
    ok &= passed
    print(
        f"rename -> build done (inotify): median {median * 1000:.0f} ms, "
        f"min {min(inotify) * 1000:.0f} ms, max {max(inotify) * 1000:.0f} ms over "
        f"{len(inotify)} trials (target < {LATENCY_TARGET * 1000:.0f} ms): "
        f"{'PASS' if passed else 'FAIL'}"
    )
    polled = latency(max(5, args.trials // 4), poll=True, poll_interval=0.25)
    print(
        f"rename -> build done (--poll, 0.25 s interval, for reference): median "
        f"{statistics.median(polled) * 1000:.0f} ms over {len(polled)} trials"
    )
    builds = burst_builds()
    passed = builds == 1
    ok &= passed
    print(
        f"builds for a burst of {BURST} writes: {builds} (target 1): {'PASS' if passed else 'FAIL'}"
    )
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
