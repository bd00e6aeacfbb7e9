"""Benchmark: `parse_ane_metadata` against `onnx.load` on a large container.

Builds a model whose single initializer holds SIZE MiB of raw_data inside the protobuf, embeds
ane.* metadata into it, then times `parse_ane_metadata(path)` (median of many runs) against
`onnx.load(path, load_external_data=False)` (median of 3). Target: parse at least 1000x faster.

    python benchmarks/bench_metadata.py [--size-mib 1024] [--runs 200]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _models import TD_SIZE, big_model, microcode

TARGET_RATIO = 1000.0


def _build(folder: Path, size: int) -> Path:
    """A container of about ``size`` bytes: a big initializer plus small ane.* payloads."""
    from ane_build.container.writer import embed_ane_metadata
    from ane_build.formats.payload import IoSlot, PayloadRef

    source = big_model(folder / "source.onnx", size)
    n = size // 4
    gc.collect()

    output = folder / "source_ane.onnx"
    embed_ane_metadata(
        source,
        output,
        microcode=PayloadRef.from_bytes(microcode()),
        td_size=TD_SIZE,
        td_count=1,
        weights=PayloadRef.from_bytes(os.urandom(64 << 10)),
        toolchain="bench",
        io={4: IoSlot(role="output", n=1, c=1, h=1, w=n, plane_stride=0, row_stride=0)},
        tiles={0: 1 << 20, 4: 1 << 20},
    )
    source.unlink()
    return output


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="initializer size in MiB")
    parser.add_argument("--runs", type=int, default=200, help="parse runs (median)")
    args = parser.parse_args()

    import onnx

    from ane_build.container.metadata import parse_ane_metadata

    with tempfile.TemporaryDirectory(dir="/tmp", prefix="bench_metadata.") as tmp:
        print(f"building a {args.size_mib} MiB model in {tmp} ...")
        path = _build(Path(tmp), args.size_mib << 20)
        size_mib = path.stat().st_size / (1 << 20)

        meta = parse_ane_metadata(path)  # warm-up: imports, page cache of the header pages
        parse_times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            parse_ane_metadata(path)
            parse_times.append(time.perf_counter() - start)

        load_times = []
        for _ in range(3):
            gc.collect()
            start = time.perf_counter()
            model = onnx.load(os.fspath(path), load_external_data=False)
            load_times.append(time.perf_counter() - start)
            del model

        parse_s = statistics.median(parse_times)
        load_s = statistics.median(load_times)
        ratio = load_s / parse_s
        print(
            f"container size                 {size_mib:10.1f} MiB ({len(meta.keys)} metadata keys)"
        )
        print(
            f"parse_ane_metadata             {parse_s * 1e6:10.1f} us (median of {args.runs}; "
            f"min {min(parse_times) * 1e6:.1f}, max {max(parse_times) * 1e6:.1f})"
        )
        print(
            f"onnx.load(external=False)      {load_s * 1e3:10.1f} ms (median of 3: "
            + ", ".join(f"{t * 1e3:.0f}" for t in load_times)
            + ")"
        )
        print(f"ratio                          {ratio:10.0f} x")
        ok = ratio >= TARGET_RATIO
        print(
            f"{'PASS' if ok else 'FAIL'}: parse_ane_metadata is {ratio:.0f}x faster than onnx.load "
            f"(target >= {TARGET_RATIO:.0f}x)"
        )
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
