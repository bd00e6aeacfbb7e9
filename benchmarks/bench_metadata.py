"""Benchmark: `parse_ane_metadata` reads a handful of bytes and takes microseconds, at any size.

Three containers, built in code: 8 MiB and 1 GiB of initializers inside the protobuf, and a model
whose 4 GiB initializer lives in an external data file (sparse on disk; never opened). For each,
`parse_ane_metadata` runs on a file object that counts every byte read from the OS, and is timed
(median of RUNS). Gates, for every size:

- median parse time <= TIME_TARGET_MS (it must not grow with the model), and
- bytes read from the file <= READ_TARGET_KIB (the graph is skipped by its length prefix;
  reads go through a 16 KiB buffer, so this counts a few buffer fills, not the payloads);

and at 1 GiB, `onnx.load(load_external_data=False)` in the same run is >= RATIO_TARGET times
slower (the reason this reader exists). The ratio alone is not a gate of its own: it grows with
the file size by construction, while the two absolute gates do not.

    python benchmarks/bench_metadata.py [--runs 200] [--sizes-mib 8 1024]
"""

from __future__ import annotations

import argparse
import gc
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _models import TD_SIZE, big_model, microcode

TIME_TARGET_MS = 2.0
READ_TARGET_KIB = 256
RATIO_TARGET = 1000.0
EXTERNAL_GIB = 4


class CountingReader(io.RawIOBase):
    """A raw file that counts the bytes it hands out (what the parser made the OS read)."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "rb", buffering=0)  # noqa: SIM115 - closed in close()
        self.name = os.fspath(path)
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = self._file.readinto(buffer) or 0
        self.bytes_read += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def fileno(self) -> int:
        return self._file.fileno()

    def close(self) -> None:
        self._file.close()
        super().close()


def _embed(source: Path, output: Path) -> Path:
    from ane_build import IoSlot, PayloadRef, embed_ane_metadata

    embed_ane_metadata(
        source,
        output,
        microcode=PayloadRef.from_bytes(microcode()),
        td_size=TD_SIZE,
        td_count=1,
        weights=PayloadRef.from_bytes(os.urandom(64 << 10)),
        toolchain="bench",
        io={4: IoSlot(role="output", n=1, c=1, h=1, w=64, plane_stride=128, row_stride=128)},
        tiles={0: 1 << 20, 4: 1 << 14},
    )
    source.unlink()
    return output


def _external(folder: Path, size: int) -> Path:
    """A model whose one initializer of ``size`` bytes is external data (a sparse file)."""
    import onnx
    from onnx import TensorProto, helper

    data = folder / "weights.bin"
    with open(data, "wb") as f:
        f.truncate(size)  # sparse: the parser must never read it, so it need not hold bytes
    tensor = onnx.TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[size // 4])
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", data.name), ("offset", "0"), ("length", str(size))):
        tensor.external_data.add(key=key, value=value)
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "external",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [size // 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [size // 4])],
        [tensor],
    )
    source = folder / "external.onnx"
    onnx.save_model(helper.make_model(graph), os.fspath(source))
    return _embed(source, folder / "external_ane.onnx")


def _measure(path: Path, runs: int) -> tuple[float, int]:
    """Median parse time in seconds, and the bytes one parse reads."""
    from ane_build import parse_ane_metadata

    with CountingReader(path) as raw:
        parse_ane_metadata(io.BufferedReader(raw, buffer_size=16 << 10))
        read = raw.bytes_read
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        parse_ane_metadata(path)
        times.append(time.perf_counter() - start)
    return statistics.median(times), read


def _onnx_load(path: Path) -> float:
    import onnx

    times = []
    for _ in range(3):
        gc.collect()
        start = time.perf_counter()
        model = onnx.load(os.fspath(path), load_external_data=False)
        times.append(time.perf_counter() - start)
        del model
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="parse runs per size (median)")
    parser.add_argument("--sizes-mib", type=int, nargs="+", default=[8, 1024])
    args = parser.parse_args()
    ok = True
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="bench_metadata.") as tmp:
        folder = Path(tmp)
        cases = []
        for mib in args.sizes_mib:
            print(f"building a {mib} MiB container ...", flush=True)
            source = big_model(folder / f"m{mib}.onnx", mib << 20)
            cases.append((f"{mib} MiB inside", _embed(source, folder / f"m{mib}_ane.onnx"), mib))
        print(f"building a model with {EXTERNAL_GIB} GiB of external data ...", flush=True)
        cases.append((f"{EXTERNAL_GIB} GiB external", _external(folder, EXTERNAL_GIB << 30), 0))
        print(f"{'case':<18}{'file':>12}{'parse (median)':>16}{'bytes read':>12}")
        for label, path, mib in cases:
            parse_s, read = _measure(path, args.runs)
            size = path.stat().st_size
            print(f"{label:<18}{size / (1 << 20):>10.1f} M{parse_s * 1e3:>13.3f} ms{read:>12,}")
            if parse_s * 1e3 > TIME_TARGET_MS or read > READ_TARGET_KIB << 10:
                ok = False
                print(f"  FAIL: over {TIME_TARGET_MS} ms or {READ_TARGET_KIB} KiB read")
            if mib == 1024:
                load_s = _onnx_load(path)
                ratio = load_s / parse_s
                print(f"  onnx.load {load_s * 1e3:.0f} ms: parse is {ratio:.0f}x faster")
                if ratio < RATIO_TARGET:
                    ok = False
                    print(f"  FAIL: ratio under {RATIO_TARGET:.0f}x")
    print(
        f"{'PASS' if ok else 'FAIL'}: parse <= {TIME_TARGET_MS} ms and <= {READ_TARGET_KIB} KiB "
        f"read at every size; >= {RATIO_TARGET:.0f}x onnx.load at 1 GiB"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
