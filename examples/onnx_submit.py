#!/usr/bin/env python3
"""Submit an ``_ane.onnx`` container to the ANE (or the simulator) and show what came back.

Usage: examples/onnx_submit.py MODEL [--device auto|sim|sim:stock|PATH] [--mode onnx|direct]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from ane_build import (
    AneError,
    open_device,
    parse_ane_metadata,
    submit_onnx_model,
    verify_container,
)


def main() -> int:
    """Parse arguments, verify, submit, and print what happened; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--device", default="auto", help="auto, sim, sim:stock or a /dev path")
    parser.add_argument("--mode", choices=("onnx", "direct"), default="onnx")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        meta = parse_ane_metadata(args.model)
        print(
            f"{args.model}: microcode {meta.microcode_len} B, weights {meta.weights_len} B, "
            f"td_size=0x{meta.td_size:x}, td_count={meta.td_count}, "
            f"toolchain {meta.toolchain or 'unknown'}"
        )
        report = verify_container(args.model)
        if not report.ok:
            print(report.summary(), file=sys.stderr)
            return 1
        with open_device(args.device) as device:
            where = "the simulator" if device.is_simulated else f"ANE hardware at {device.path}"
            print(f"submitting to {where} in {args.mode} mode")
            rng = np.random.default_rng(0)
            inputs = {
                io.name or f"slot{slot}": rng.standard_normal((io.n, io.c, io.h, io.w)).astype(
                    np.float16
                )
                for slot, io in meta.io.items()
                if io.role == "input"
            }
            for name, tensor in inputs.items():
                print(
                    f"  input {name}: shape {tuple(tensor.shape)}, first values "
                    f"{tensor.ravel()[:4].tolist()}"
                )
            result = submit_onnx_model(device, args.model, meta, mode=args.mode, inputs=inputs)
    except AneError as exc:
        print(f"onnx_submit: error: {exc}", file=sys.stderr)
        return 1
    print(result.describe())
    for name, tensor in result.outputs.items():
        print(
            f"  output {name}: shape {tuple(tensor.shape)} {tensor.dtype}, "
            f"first values {tensor.ravel()[:8].tolist()}"
        )
    if result.simulated:
        print(
            "note: the simulator validated the submission but cannot run ANE microcode; in onnx "
            "mode it fills output buffers with onnx's reference evaluator. These are not "
            "hardware results."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
