"""Build-system benchmarks (issues 4 and 12), each a ratio against a baseline in the same run.

1. noop: no-op ``doit`` on a 2,000-model project vs plain doit on the same task graph (same
   tasks, file_dep and targets; doit's default md5 checker and dbm backend). Gate: <= 1.0x.
   Our full check without the no-op stamp is printed too (no gate).
2. touch: after ``touch`` of inputs totalling 1 GiB, our second and third runs vs plain doit's.
   Gate: >= 10x faster.
3. cold: a cold build of 200 models through the whole pipeline (example compiler, convert,
   verify, deploy and check on the simulator), ``doit -n 2`` vs ``doit -n 1``. Gate: >= 1.6x.
4. watch: watch mode on the example project; a rebuilt compiler (renamed into place) until all
   4 containers are rebuilt and checked. Gate: median < 1 s; the example compiler's own run
   time (from the compile records) is reported separately. Also a burst of 20 writes to a
   source: gate exactly 1 build.

Run: python benchmarks/bench_build.py [--only noop|touch|cold|watch] [--models N] ...
Exit status 1 when a gate fails.
"""

from __future__ import annotations

import argparse
import json
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
DODO = "from ane_build.dodo import *  # noqa: F403\n"
COMPILE = (
    '[compile]\ncommand = ["{python}", "{tool}", "{source}", "{out}"]\n'
    'tool = "tools/example_compiler.py"\noutputs = "compiler-out/{name}"\n'
)

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
        raise SystemExit(f"doit failed in {cwd}:\n{proc.stdout[-4000:]}\n{proc.stderr}")
    return took


def discover_models(count: int, weights: int, prefix: str = "m") -> dict[str, SyntheticModel]:
    return {
        f"{prefix}{i:04d}": SyntheticModel(
            source=Path(f"models/{prefix}{i:04d}.onnx"),
            op="Relu",
            form="discover",
            dir=Path(f"compiler-out/{prefix}{i:04d}"),
            weights=weights,
            seed=i,
        )
        for i in range(count)
    }


def make_project(root: Path, models: dict[str, SyntheticModel], extra: str = "") -> None:
    """A project of synthetic models; ``extra`` is added to each config (e.g. a compile step)."""
    (root / "configs").mkdir(parents=True)
    (root / "dodo.py").write_text(DODO)
    for name, model in models.items():
        generate_model(name, model, root)
        artifacts = "" if extra else f'[artifacts]\nroot = "{model.dir}"\n'
        (root / "configs" / f"{name}.toml").write_text(
            f'source = "{model.source}"\n{artifacts}[deploy]\ndevice = "sim"\n{extra}'
        )


def make_plain(plain: Path, ours: Path) -> None:
    """The same graph as plain doit tasks, on our project's input files."""
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
    make_project(ours, discover_models(count, 1024))
    plain.mkdir()
    make_plain(plain, ours)
    first = doit(ours, "-n", "2"), doit(plain, "-n", "2")
    doit(ours)  # the first build generated nothing it read, but be sure the stamp is written
    t_ours, t_plain, t_full = [], [], []
    stamp = ours / ".ane_build" / "noop.json"
    for _ in range(runs):
        t_ours.append(doit(ours))
        t_plain.append(doit(plain))
        saved = stamp.read_bytes()
        stamp.unlink()  # our full check, for reference
        t_full.append(doit(ours))
        stamp.write_bytes(saved)
    ours_s, plain_s = statistics.median(t_ours), statistics.median(t_plain)
    ratio = ours_s / plain_s
    print(
        f"no-op, {count} models x 3 tasks: ours {ours_s:.3f} s, plain doit {plain_s:.3f} s "
        f"(median of {runs}) -> {ratio:.2f}x (gate <= 1.00x); our full check without the "
        f"stamp {statistics.median(t_full):.3f} s ({statistics.median(t_full) / plain_s:.2f}x); "
        f"first builds (-n 2) {first[0]:.1f} s / {first[1]:.1f} s"
    )
    return ratio <= 1.0


def bench_touch(tmp: Path, gib: float) -> bool:
    ours, plain = tmp / "touch-ours", tmp / "touch-plain"
    per_model = 256 << 20
    count = max(1, round(gib * (1 << 30) / per_model))
    make_project(ours, discover_models(count, per_model, "big"))
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
        gate = "" if i == 0 else " (gate >= 10x)"
        print(
            f"  run {i + 1}: ours {times['ours'][i]:.2f} s, plain doit {times['plain'][i]:.2f} s"
            f" -> {ratio:.1f}x faster{gate}"
        )
        if i:
            ok &= ratio >= 10
    return ok


def bench_cold(tmp: Path, count: int) -> bool:
    base = tmp / "cold"
    models = {
        f"c{i:03d}": SyntheticModel(source=Path(f"models/c{i:03d}.onnx"), op="Relu", seed=i)
        for i in range(count)
    }
    make_project(base, models, COMPILE)
    (base / "tools").mkdir()
    shutil.copy(REPO / "tools" / "example_compiler.py", base / "tools")
    times = {}
    for jobs in ("1", "2"):
        root = tmp / f"cold-{jobs}"
        shutil.copytree(base, root)
        times[jobs] = doit(root, "-n", jobs)
        checked = sum(
            json.loads(p.read_text())["check"]["passed"]
            for p in (root / "build" / "deploy").glob("*.json")
        )
        assert checked == count, f"-n {jobs}: {checked} of {count} models checked"
    ratio = times["1"] / times["2"]
    print(
        f"cold build, {count} models (compile, convert, verify, deploy, check): -n 1 "
        f"{times['1']:.1f} s, -n 2 {times['2']:.1f} s -> {ratio:.2f}x faster (gate >= 1.6x; "
        f"{os.cpu_count()} CPUs)"
    )
    return ratio >= 1.6


def _records_after(root: Path, names: list[str], since: float) -> bool:
    for name in names:
        path = root / "build" / "deploy" / f"{name}.json"
        try:
            if path.stat().st_mtime < since:
                return False
        except FileNotFoundError:
            return False
    return True


def bench_watch(tmp: Path, trials: int) -> bool:
    from ane_build.build.runner import watch_project
    from tests.helpers import EXAMPLE_MODELS, example_project

    root = example_project(tmp / "watch")
    doit(root)
    counter = _BuildCounter()
    logging.getLogger("ane_build.build.runner").addHandler(counter)
    logging.getLogger("ane_build.build.runner").setLevel(logging.INFO)
    cwd = os.getcwd()
    stop = threading.Event()
    thread = threading.Thread(
        target=watch_project, args=(root,), kwargs={"build_first": False, "stop": stop}
    )
    thread.start()
    time.sleep(1.0)
    tool = root / "tools" / "example_compiler.py"
    text = tool.read_text()
    latencies, compiler = [], []
    for trial in range(trials):
        fresh = tool.with_name(".example_compiler.py.new")
        fresh.write_text(text.replace("WEIGHTS = 4096", f"WEIGHTS = {4096 + 16 * (trial + 1)}"))
        start = time.time()
        os.replace(fresh, tool)  # a rebuilt compiler lands
        while not _records_after(root, EXAMPLE_MODELS, start):
            if time.time() - start > 30:
                raise SystemExit("watch did not rebuild within 30 s")
            time.sleep(0.005)
        latencies.append(time.time() - start)
        compiler.append(
            sum(
                json.loads((root / ".ane_build" / "records" / f"{m}.compile.json").read_text())[
                    "seconds"
                ]
                for m in EXAMPLE_MODELS
            )
        )
        time.sleep(0.3)
    time.sleep(1.0)
    builds_before = counter.builds
    source = root / "models" / "relu.onnx"
    data = source.read_bytes()
    for _ in range(20):
        source.write_bytes(data)
        time.sleep(0.005)
    time.sleep(3.0)
    burst = counter.builds - builds_before
    stop.set()
    thread.join(30)
    os.chdir(cwd)
    median = statistics.median(latencies)
    print(
        f"watch, compiler rebuilt -> 4 models recompiled, rebuilt and checked: median "
        f"{median * 1e3:.0f} ms over {trials} trials (min {min(latencies) * 1e3:.0f}, max "
        f"{max(latencies) * 1e3:.0f}; gate < 1000 ms), of which the example compiler itself "
        f"{statistics.median(compiler) * 1e3:.0f} ms (4 runs, median); burst of 20 writes -> "
        f"{burst} build(s) (gate 1)"
    )
    return median < 1.0 and burst == 1


class _BuildCounter(logging.Handler):
    """Counts the "watch: built ..." lines watch mode logs after each build."""

    def __init__(self) -> None:
        super().__init__()
        self.builds = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("watch: built"):
            self.builds += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=2000, help="no-op benchmark size")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--touch-gib", type=float, default=1.0)
    parser.add_argument("--cold-models", type=int, default=200)
    parser.add_argument("--trials", type=int, default=15)
    parser.add_argument("--only", choices=("noop", "touch", "cold", "watch"))
    args = parser.parse_args()
    sys.path.insert(0, os.fspath(REPO))  # tests.helpers, for the example project
    ok = True
    with tempfile.TemporaryDirectory(prefix="ane-bench-") as name:
        tmp = Path(name)
        if args.only in (None, "noop"):
            ok &= bench_noop(tmp, args.models, args.runs)
        if args.only in (None, "touch"):
            ok &= bench_touch(tmp, args.touch_gib)
        if args.only in (None, "cold"):
            ok &= bench_cold(tmp, args.cold_models)
        if args.only in (None, "watch"):
            ok &= bench_watch(tmp, args.trials)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
