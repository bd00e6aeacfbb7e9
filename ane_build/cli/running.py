"""Commands that run a program: ``run`` (outputs, stats, latency) and ``check`` (against ONNX).

Each handler gets argparse's namespace, calls `AneModel` or `check_model`, and prints: a table
for people or one JSON document (``--json``). Exit codes: 0 ok (check: every output within
tolerance), 1 a mismatch or a failed operation, 2 usage, 3 inputs that do not fit the model.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import (
    EXIT_FAILED,
    EXIT_OK,
    UniqueNames,
    device,
    named_file,
    named_tolerance,
    natural,
    non_negative_float,
    positive,
)

if TYPE_CHECKING:
    import numpy as np

    from ..check import CheckReport
    from ..driver.device import ANEDevice
    from ..run import AneModel, SubmitResult


def tensor_stats(name: str, value: np.ndarray) -> dict[str, Any]:
    """Name, shape, dtype, and min/max/mean over the finite elements; NaN and Inf counts.

    min/max/mean are None when no element is finite, so the result is strict JSON.
    """
    import numpy as np

    array = np.asarray(value)
    wide = array.astype(np.float64)
    finite = wide[np.isfinite(wide)]
    return {
        "name": name,
        "shape": list(array.shape),
        "dtype": str(array.dtype),
        "min": float(finite.min()) if finite.size else None,
        "max": float(finite.max()) if finite.size else None,
        "mean": float(finite.mean()) if finite.size else None,
        "nan": int(np.count_nonzero(np.isnan(wide))),
        "inf": int(np.count_nonzero(np.isinf(wide))),
    }


def _shape(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape)) or "scalar"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def stats_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Aligned columns: one row per tensor's `tensor_stats`."""
    header = ("output", "shape", "dtype", "min", "max", "mean", "nan", "inf")
    table = [header] + [
        (
            row["name"],
            _shape(row["shape"]),
            row["dtype"],
            _number(row["min"]),
            _number(row["max"]),
            _number(row["mean"]),
            str(row["nan"]),
            str(row["inf"]),
        )
        for row in rows
    ]
    widths = [max(len(cells[k]) for cells in table) for k in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()
        for cells in table
    )


def _where(dev: ANEDevice) -> str:
    return "the simulator (not a hardware result)" if dev.is_simulated else dev.path


def _simulator_note(dev: ANEDevice) -> str | None:
    """Why the simulator's outputs are no results, when it computed none for the last submit."""
    kernel = dev.kernel
    if kernel is None or not kernel.submits or kernel.submits[-1].outputs:
        return None
    last = kernel.submits[-1]
    why = last.evaluation_error or (
        "it has no graph for this program: a bare .anec file, or a direct-mode submit"
    )
    return f"the simulator computed no outputs ({why}); they are what the BOs held, not results"


def _save(path: Path | None, *arrays: Mapping[str, np.ndarray]) -> None:
    from ..check.inputs import save_arrays

    if path is not None:
        merged: dict[str, np.ndarray] = {}
        for group in arrays:
            merged.update(group)
        save_arrays(path, merged)


def _run_repeated(
    model: AneModel, fed: Mapping[str, np.ndarray], repeat: int
) -> tuple[dict[str, np.ndarray], SubmitResult, list[float], list[float]]:
    """Run ``repeat`` times: the last outputs, the first run's result, wall and ioctl times."""
    walls, ioctls, results = [], [], []
    outputs: dict[str, np.ndarray] = {}
    for _ in range(repeat):
        start = time.perf_counter()
        outputs = model.run(fed)
        walls.append(time.perf_counter() - start)
        assert model.last is not None  # set by every run
        results.append(model.last)
        ioctls.append(model.last.elapsed)
    return outputs, results[0], walls, ioctls


def cmd_run(args: argparse.Namespace) -> int:
    """``run``: feed a program, print each output's stats and the latency."""
    from ..check.inputs import resolve_inputs
    from ..container.graph import TensorSpec
    from ..driver.device import open_device
    from ..run import AneModel
    from ..run.latency import latency
    from ..run.model import ANEC_SUFFIXES

    if args.model.suffix.lower() in ANEC_SUFFIXES and args.mode == "onnx":
        args.parser.error(f"{args.model}: an .anec file has no container for --mode onnx")
    with open_device(args.device) as dev, AneModel.load(dev, args.model, mode=args.mode) as model:
        specs = [TensorSpec(info.name, info.shape, info.dtype) for info in model.inputs]
        fed = resolve_inputs(
            specs,
            data=args.data,
            files=dict(args.input),
            seed=args.seed,
            outputs=[info.name for info in model.outputs],
        )
        outputs, first, walls, ioctls = _run_repeated(model, fed, args.repeat)
        note = _simulator_note(dev)
        where, simulated, mode, load = _where(dev), dev.is_simulated, model.mode, model.load_seconds
    _save(args.save, fed, outputs)
    report = {
        "model": str(args.model),
        "device": where,
        "simulated": simulated,
        "mode": mode,
        "load_ms": load * 1e3,
        "first_run_ms": first.total * 1e3,
        "latency": {**latency(walls), "submit_median_ms": statistics.median(ioctls) * 1e3},
        "inputs": [tensor_stats(name, value) for name, value in fed.items()],
        "outputs": [tensor_stats(name, value) for name, value in outputs.items()],
        "note": note,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_run(report)
    if note:
        print(f"ane-build run: warning: {note}", file=sys.stderr)
    return EXIT_OK


def _print_run(report: Mapping[str, Any]) -> None:
    lat = report["latency"]
    print(f"{report['model']}: ran on {report['device']} in {report['mode']} mode")
    print(stats_table(report["outputs"]))
    print(
        f"load {report['load_ms']:.2f} ms, first run {report['first_run_ms']:.2f} ms; over "
        f"{lat['runs']} run(s): min {lat['min_ms']:.3f} ms, median {lat['median_ms']:.3f} ms, "
        f"p99 {lat['p99_ms']:.3f} ms (submit ioctl median {lat['submit_median_ms']:.3f} ms)"
    )


def _cache_dir(args: argparse.Namespace) -> Path | None:
    """Where reference outputs are cached: the project's state folder, else the user's cache."""
    from ..build.layout import STATE_DIR, find_project_root
    from ..check.reference import CACHE_FOLDER, user_cache_dir
    from ..errors import ConfigError

    if args.no_cache:
        return None
    try:
        return find_project_root(Path.cwd()) / STATE_DIR / CACHE_FOLDER
    except ConfigError:
        return user_cache_dir()


def cmd_check(args: argparse.Namespace) -> int:
    """``check``: run the program and its source graph on the same inputs, compare."""
    from ..check import DEFAULT_TOLERANCE, Tolerance, check_model
    from ..driver.device import open_device
    from ..run.model import ANEC_SUFFIXES

    if args.model.suffix.lower() in ANEC_SUFFIXES and args.source is None:
        args.parser.error(f"{args.model}: an .anec file has no graph: give --source SRC.onnx")
    tolerance = Tolerance(
        DEFAULT_TOLERANCE.atol if args.atol is None else args.atol,
        DEFAULT_TOLERANCE.rtol if args.rtol is None else args.rtol,
    )
    per_output = {name: Tolerance(atol, rtol) for name, atol, rtol in args.output_tol}
    with open_device(args.device) as dev:
        result = check_model(
            dev,
            args.model,
            source=args.source,
            data=args.data,
            files=dict(args.input),
            seed=args.seed,
            tolerance=tolerance,
            per_output=per_output,
            cache_dir=_cache_dir(args),
        )
        note, where, simulated = _simulator_note(dev), _where(dev), dev.is_simulated
    _save(args.save, result.inputs, result.outputs)
    report = result.report
    reference = result.reference
    if args.json:
        document = {
            "model": str(args.model),
            "source": str(result.source),
            "device": where,
            "simulated": simulated,
            "engine_ms": result.engine_seconds * 1e3,
            "reference": {
                "runtime": reference.runtime,
                "cached": reference.cached,
                "fallback_reason": reference.fallback_reason,
            },
            "note": note,
            **report.to_json(),
        }
        print(json.dumps(document, indent=2, allow_nan=False))
    else:
        cached = ", cached" if reference.cached else ""
        print(f"{args.model}: ran on {where}")
        print(f"reference: {reference.runtime} on {result.source}{cached}")
        print(report.table())
        print(_verdict(report))
    if note:
        print(f"ane-build check: warning: {note}", file=sys.stderr)
    return EXIT_OK if report.passed else EXIT_FAILED


def _verdict(report: CheckReport) -> str:
    """The last line of a check: how many outputs failed, and the worst one's line."""
    count = len(report.outputs)
    if report.passed:
        return f"PASS: all {count} output(s) within tolerance"
    failed = sum(not output.passed for output in report.outputs)
    worst = report.worst
    detail = f"; worst: {worst.line()}" if worst is not None else ""
    return f"FAIL: {failed} of {count} output(s) outside tolerance{detail}"


def _add_inputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="an _ane.onnx container or an .anec/.ane file")
    parser.add_argument(
        "--input",
        action=UniqueNames,
        type=named_file,
        default=[],
        metavar="NAME=FILE",
        help="one input from a file (.npy, .npz, .pb); repeatable; wins over --data",
    )
    parser.add_argument(
        "--data",
        type=Path,
        metavar="DIR|FILE",
        help="inputs from an ONNX test data folder or an .npz/.npy/.pb file; arrays named like "
        "an output are skipped, so a file --save wrote replays its inputs",
    )
    parser.add_argument("--seed", type=natural, default=0, help="seed of random inputs (default 0)")
    parser.add_argument(
        "--save",
        type=Path,
        metavar="OUT.npz",
        help="write the inputs as fed (fp16-rounded) and the outputs, by name, to an .npz",
    )
    parser.add_argument(
        "--device", type=device, default="auto", help="auto, sim, sim:stock or a /dev path"
    )
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")


def add_parsers(sub: Any) -> None:
    """Register ``run`` and ``check`` on ``sub`` (an argparse subparsers object)."""
    run = sub.add_parser("run", help="run a program on inputs; output stats and latency")
    _add_inputs(run)
    run.add_argument("--repeat", type=positive, default=1, metavar="N", help="runs (default 1)")
    run.add_argument(
        "--mode",
        choices=("onnx", "direct"),
        help="how to submit (default: onnx for a container, direct for an .anec file)",
    )
    run.set_defaults(func=cmd_run, parser=run)

    check = sub.add_parser("check", help="compare a program's outputs with its ONNX source")
    _add_inputs(check)
    check.add_argument("--source", type=Path, help="source ONNX (default: the container's graph)")
    check.add_argument(
        "--atol", type=non_negative_float, metavar="A", help="absolute tolerance (default 2**-10)"
    )
    check.add_argument(
        "--rtol", type=non_negative_float, metavar="R", help="relative tolerance (default 2**-8)"
    )
    check.add_argument(
        "--output-tol",
        action=UniqueNames,
        type=named_tolerance,
        default=[],
        metavar="NAME=ATOL,RTOL",
        help="tolerance of one output; repeatable",
    )
    check.add_argument(
        "--no-cache", action="store_true", help="always run the reference; never cache it"
    )
    check.set_defaults(func=cmd_check, parser=check)
