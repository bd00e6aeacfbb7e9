"""Build-system benchmarks (issue 4), each a ratio against plain doit measured in the same run.

1. No-op ``doit`` on a 200-model project vs an equivalent plain doit task graph (same tasks,
   same file_dep and targets, doit's default md5 checker and dbm backend). Target: <= 1.5x.
2. After ``touch`` of inputs totalling 1 GiB: our second and third runs vs plain doit's second
   and third runs on the same files. Target: >= 10x faster.
3. Watch mode with real builds on the example models: median time from an artefact's rename
   into place to the rebuilt output (target < 0.5 s), and builds caused by a burst of 20
   writes (target exactly 1).

Run: python benchmarks/bench_build.py [--models N] [--touch-gib G] [--trials N]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from ane_build.build.context import BuildContext
from ane_build.synthetic.example import SyntheticModel, generate_model

REPO = Path(__file__).resolve().parents[1]

PLAIN_DODO = """
import json, shutil
SPEC = json.load(open("plain.json"))
DOIT_CONFIG = {"default_tasks": ["convert", "verify", "deploy"], "verbosity": 0}

def _copy(src, dst):
    shutil.copyfile(src, dst)

def task_convert():
    for name, m in SPEC.items():
        yield {"name": name, "file_dep": m["inputs"], "targets": [m["output"]],
               "actions": [(_copy, [m["inputs"][0], m["output"]])]}

def task_verify():
    for name, m in SPEC.items():
        yield {"name": name, "file_dep": [m["output"]], "actions": [(lambda: True, [])]}

def task_deploy():
    for name, m in SPEC.items():
        yield {"name": name, "file_dep": [m["output"]], "targets": [m["record"]],
               "task_dep": ["verify:" + name],
               "actions": [(_copy, [m["output"], m["record"]])]}
"""


def doit(cwd: Path, *args: str) -> float:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "doit", *args], cwd=cwd, capture_output=True, text=True
    )
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"doit failed in {cwd}:\n{proc.stdout}\n{proc.stderr}")
    return took


def make_project(root: Path, models: dict[str, SyntheticModel]) -> None:
    (root / "configs").mkdir(parents=True)
    (root / "dodo.py").write_text("from ane_build.dodo import *  # noqa: F403\n")
    for name, model in models.items():
        generate_model(name, model, root)
        (root / "configs" / f"{name}.toml").write_text(
            f'source = "{model.source}"\n[artifacts]\nroot = "{model.dir}"\n'
            '[deploy]\ndevice = "sim"\n'
        )


def make_plain(plain: Path, ours: Path) -> None:
    """The same graph as plain doit tasks, on our project's input files."""
    import json

    ctx = BuildContext.load(ours)
    spec = {
        name: {
            "inputs": [os.fspath(p) for p in ctx.inputs(name)],
            "output": os.fspath(plain / "build" / f"{name}_ane.onnx"),
            "record": os.fspath(plain / "build" / "deploy" / f"{name}.json"),
        }
        for name in ctx.models
    }
    (plain / "build" / "deploy").mkdir(parents=True)
    (plain / "plain.json").write_text(json.dumps(spec))
    (plain / "dodo.py").write_text(PLAIN_DODO)


def bench_noop(tmp: Path, count: int, runs: int) -> bool:
    ours, plain = tmp / "noop-ours", tmp / "noop-plain"
    models = {
        f"m{i:03d}": SyntheticModel(
            source=Path(f"models/m{i:03d}.onnx"),
            op="Relu",
            form="discover",
            dir=Path(f"compiler-out/m{i:03d}"),
            weights=1024,
            seed=i,
        )
        for i in range(count)
    }
    make_project(ours, models)
    plain.mkdir()
    make_plain(plain, ours)
    first = doit(ours), doit(plain)
    t_ours, t_plain = [], []
    for _ in range(runs):
        t_ours.append(doit(ours))
        t_plain.append(doit(plain))
    ours_s, plain_s = statistics.median(t_ours), statistics.median(t_plain)
    ratio = ours_s / plain_s
    print(
        f"no-op, {count} models x 3 tasks: ours {ours_s:.3f} s, plain doit {plain_s:.3f} s "
        f"(median of {runs}) -> {ratio:.2f}x (target <= 1.50x); first builds "
        f"{first[0]:.1f} s / {first[1]:.1f} s"
    )
    return ratio <= 1.5


def bench_touch(tmp: Path, gib: float) -> bool:
    ours, plain = tmp / "touch-ours", tmp / "touch-plain"
    per_model = 256 << 20
    count = max(1, round(gib * (1 << 30) / per_model))
    models = {
        f"big{i}": SyntheticModel(
            source=Path(f"models/big{i}.onnx"),
            op="Relu",
            form="discover",
            dir=Path(f"compiler-out/big{i}"),
            weights=per_model,
            seed=i,
        )
        for i in range(count)
    }
    make_project(ours, models)
    plain.mkdir()
    make_plain(plain, ours)
    doit(ours)
    doit(plain)
    ctx = BuildContext.load(ours)
    inputs = {p for name in ctx.models for p in ctx.inputs(name)}
    total = sum(p.stat().st_size for p in inputs)
    for path in inputs:
        os.utime(path)
    times: dict[str, list[float]] = {"ours": [], "plain": []}
    for _ in range(3):
        times["ours"].append(doit(ours))
        times["plain"].append(doit(plain))
    print(f"after touching {len(inputs)} inputs ({total / (1 << 30):.2f} GiB):")
    ok = True
    for i in range(3):
        ratio = times["plain"][i] / times["ours"][i]
        target = "" if i == 0 else " (target >= 10x)"
        print(
            f"  run {i + 1}: ours {times['ours'][i]:.2f} s, plain doit {times['plain'][i]:.2f} s"
            f" -> {ratio:.1f}x faster{target}"
        )
        if i:
            ok &= ratio >= 10
    return ok


def bench_watch(tmp: Path, trials: int) -> bool:
    from ane_build.build.runner import watch_project

    root = tmp / "watch"
    root.mkdir()
    for item in ("configs", "synthetic.toml"):
        src = REPO / item
        if src.is_dir():
            shutil.copytree(src, root / item)
        else:
            shutil.copy(src, root / item)
    (root / "dodo.py").write_text("from ane_build.dodo import *  # noqa: F403\n")
    doit(root)
    counter = _BuildCounter()
    logging.getLogger("ane_build.build.actions").addHandler(counter)
    logging.getLogger("ane_build.build.actions").setLevel(logging.INFO)
    cwd = os.getcwd()
    thread = threading.Thread(
        target=watch_project, args=(root,), kwargs={"build_first": False}, daemon=True
    )
    thread.start()
    time.sleep(1.0)
    weights = root / "compiler-out" / "add" / "add_weights.bin"
    output = root / "build" / "add_ane.onnx"
    latencies = []
    for trial in range(trials):
        before = output.stat().st_mtime_ns
        tmp_file = weights.with_name(".add_weights.bin.part")
        tmp_file.write_bytes(os.urandom(4096 + trial))
        start = time.perf_counter()
        os.replace(tmp_file, weights)
        while output.stat().st_mtime_ns == before:
            if time.perf_counter() - start > 10:
                raise SystemExit("watch did not rebuild within 10 s")
            time.sleep(0.002)
        latencies.append(time.perf_counter() - start)
        time.sleep(0.4)
    time.sleep(1.0)
    builds_before = counter.builds
    for i in range(20):
        weights.write_bytes(os.urandom(4096 + i))
        time.sleep(0.005)
    time.sleep(3.0)
    burst_builds = counter.builds - builds_before
    os.chdir(cwd)
    median = statistics.median(latencies)
    print(
        f"watch: rename -> rebuilt output, median {median * 1e3:.0f} ms over {trials} trials "
        f"(min {min(latencies) * 1e3:.0f}, max {max(latencies) * 1e3:.0f}; target < 500 ms); "
        f"burst of 20 writes -> {burst_builds} rebuild(s) (target 1)"
    )
    return median < 0.5 and burst_builds == 1


class _BuildCounter(logging.Handler):
    """Counts the "watch: built ..." lines watch mode logs after each build."""

    def __init__(self) -> None:
        super().__init__()
        self.builds = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("watch: built"):
            self.builds += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--touch-gib", type=float, default=1.0)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--only", choices=("noop", "touch", "watch"))
    args = parser.parse_args()
    ok = True
    with tempfile.TemporaryDirectory(prefix="ane-bench-") as tmp:
        if args.only in (None, "noop"):
            ok &= bench_noop(Path(tmp), args.models, args.runs)
        if args.only in (None, "touch"):
            ok &= bench_touch(Path(tmp), args.touch_gib)
        if args.only in (None, "watch"):
            ok &= bench_watch(Path(tmp), args.trials)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
