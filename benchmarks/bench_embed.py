"""Benchmark: streaming `embed_ane_metadata` against a plain file copy and the naive onnx approach.

Builds a model with SIZE MiB of initializers and a SIZE MiB weights file, then measures, each in a
fresh child process (so peak RSS is the approach's own):

- embed: `embed_ane_metadata` (streams, fsyncs the output), computing every digest;
- embed-known: the same with the input digests given, as doit's convert calls it (its up-to-date
  check has hashed every input already);
- copy: `shutil.copyfile` of a file of the output's size (the time floor for writing it);
- naive: `onnx.load` + set metadata_props + `onnx.save` (for comparison);
- floor: sha256 of both inputs and base64 of the weights, nothing written (what the format
  itself costs in CPU, to read the ratio against).

Targets: embed wall time <= 3x the copy, embed peak RSS growth < 100 MiB. The copy does not
fsync and the embed must, so on a slow disk the embed's time is the disk's; ``--dir /dev/shm``
measures both on tmpfs, where only the CPU work differs.

    python benchmarks/bench_embed.py [--size-mib 256] [--runs 7] [--dir /dev/shm]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _models import TD_SIZE, big_model, microcode

TIME_TARGET = 3.0
RSS_TARGET_MIB = 100.0


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _make_inputs(folder: Path, size: int) -> tuple[Path, Path]:
    import numpy as np

    source = big_model(folder / "source.onnx", size, random=True)
    rng = np.random.default_rng(1)
    weights = folder / "weights.bin"
    with open(weights, "wb") as f:
        chunk = 16 << 20
        for start in range(0, size, chunk):
            f.write(rng.bytes(min(chunk, size - start)))
    return source, weights


def _child(mode: str, source: Path, weights: Path, output: Path) -> dict[str, float]:
    """Run one approach; return wall time and peak RSS before/after (MiB)."""
    import onnx  # imported before measuring so every mode pays the same baseline

    from ane_build.container.writer import embed_ane_metadata
    from ane_build.formats.payload import PayloadRef

    known: dict[str, str] = {}
    if mode == "embed-known":
        # What the build system does: it has hashed every input for its up-to-date check.
        for path in (source, weights):
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                while chunk := f.read(4 << 20):
                    digest.update(chunk)
            known[os.fspath(path)] = digest.hexdigest()
    before = _maxrss_mib()
    start = time.perf_counter()
    if mode == "embed-known":
        ref = PayloadRef.from_file(weights)
        embed_ane_metadata(
            source,
            output,
            microcode=PayloadRef.from_bytes(microcode()),
            td_size=TD_SIZE,
            td_count=1,
            weights=PayloadRef(ref.length, path=weights, sha256=known[os.fspath(weights)]),
            toolchain="bench",
            source_sha256=known[os.fspath(source)],
        )
    elif mode == "embed":
        embed_ane_metadata(
            source,
            output,
            microcode=PayloadRef.from_bytes(microcode()),
            td_size=TD_SIZE,
            td_count=1,
            weights=PayloadRef.from_file(weights),
            toolchain="bench",
        )
    elif mode == "copy":
        shutil.copyfile(source, output)
    elif mode == "copy+fsync":
        shutil.copyfile(source, output)
        fd = os.open(output, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    elif mode == "floor":
        # The CPU work the container format itself demands, with no writing at all: sha256 of
        # the source and of the weights, base64 of the weights.
        from ane_build.container.writer import _b64encoder

        encoder = _b64encoder()
        for path, encode in ((source, False), (weights, True)):
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                while chunk := f.read(3 << 20):
                    digest.update(chunk)
                    if encode:
                        encoder(chunk)
    elif mode == "naive":
        model = onnx.load(os.fspath(source))
        blob = weights.read_bytes()
        props = {
            "ane.microcode.b64": base64.b64encode(microcode()).decode(),
            "ane.weights.b64": base64.b64encode(blob).decode(),
            "ane.td_size": str(TD_SIZE),
            "ane.td_count": "1",
            "ane.weights.sha256": hashlib.sha256(blob).hexdigest(),
        }
        for key, value in props.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save_model(model, os.fspath(output))
    elif mode != "baseline":
        raise SystemExit(f"unknown mode {mode}")
    wall = time.perf_counter() - start
    return {"wall": wall, "rss_before": before, "rss_after": _maxrss_mib()}


def _run_child(mode: str, source: Path, weights: Path, output: Path | str) -> dict[str, float]:
    os.sync()  # start each run without someone else's dirty pages being written back
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(source), str(weights), str(output)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(out.stdout)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256, help="initializers and weights, MiB")
    parser.add_argument("--runs", type=int, default=7, help="runs of embed and copy (median)")
    parser.add_argument(
        "--dir",
        default="/tmp",
        help="where files go; /dev/shm (tmpfs) takes disk write-back noise out of both sides",
    )
    parser.add_argument(
        "--child", nargs=4, metavar=("MODE", "SRC", "W", "OUT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        mode, source, weights, output = args.child
        if mode == "build":  # the last argument is the size in bytes
            _make_inputs(Path(source).parent, int(output))
            print("{}")
        else:
            print(json.dumps(_child(mode, Path(source), Path(weights), Path(output))))
        return 0

    size = args.size_mib << 20
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench_embed.") as tmp:
        folder = Path(tmp)
        print(
            f"building a model with {args.size_mib} MiB of initializers and a "
            f"{args.size_mib} MiB weights file in {folder} ..."
        )
        # In a child, so this process stays small: a child's peak RSS starts at its parent's.
        source, weights = folder / "source.onnx", folder / "weights.bin"
        _run_child("build", source, weights, str(size))
        output = folder / "out_ane.onnx"
        copy_src = folder / "copy_src.bin"
        copy_dst = folder / "copy_dst.bin"
        base = _run_child("baseline", source, weights, output)
        embeds, knowns, copies, synced = [], [], [], []
        for _ in range(args.runs):
            embeds.append(_run_child("embed", source, weights, output))
            knowns.append(_run_child("embed-known", source, weights, output))
            if not copy_src.exists():
                # A file of the output's size, and warm in the page cache like embed's inputs.
                shutil.copyfile(output, copy_src)
            copies.append(_run_child("copy", copy_src, weights, copy_dst))
            copy_dst.unlink()
            synced.append(_run_child("copy+fsync", copy_src, weights, copy_dst))
            copy_dst.unlink()
        out_size = output.stat().st_size
        output.unlink()
        naive = _run_child("naive", source, weights, output)
        floor = statistics.median(
            _run_child("floor", source, weights, output)["wall"] for _ in range(args.runs)
        )

        embed_wall = statistics.median(r["wall"] for r in embeds)
        known_wall = statistics.median(r["wall"] for r in knowns)
        copy_wall = statistics.median(r["wall"] for r in copies)
        synced_wall = statistics.median(r["wall"] for r in synced)
        embed_growth = max(r["rss_after"] - r["rss_before"] for r in embeds + knowns)
        naive_growth = naive["rss_after"] - naive["rss_before"]
        ratio = embed_wall / copy_wall
        mib = out_size / (1 << 20)
        print(f"output size                  {mib:9.1f} MiB")
        print(f"baseline child peak RSS      {base['rss_after']:9.1f} MiB (imports only)")
        print(
            f"shutil.copyfile              {copy_wall:9.3f} s  (median of {args.runs}; "
            f"{mib / copy_wall:.0f} MiB/s)"
        )
        print(f"shutil.copyfile + fsync      {synced_wall:9.3f} s  (median of {args.runs})")
        print(
            f"embed_ane_metadata           {embed_wall:9.3f} s  (median of {args.runs}; "
            f"{mib / embed_wall:.0f} MiB/s, includes fsync)  runs: "
            + ", ".join(f"{r['wall']:.3f}" for r in embeds)
        )
        print(
            f"embed, digests known         {known_wall:9.3f} s  (median of {args.runs}; how "
            "doit's convert calls it: inputs were hashed by the up-to-date check)  runs: "
            + ", ".join(f"{r['wall']:.3f}" for r in knowns)
        )
        print(f"  peak RSS growth (both)     {embed_growth:9.1f} MiB")
        print(
            f"hash + base64 only (floor)   {floor:9.3f} s  (sha256 of both inputs and base64 of "
            f"the weights, single thread, nothing written: {floor / copy_wall:.2f} x copyfile)"
        )
        print(f"naive onnx load/set/save     {naive['wall']:9.3f} s")
        print(f"  peak RSS growth            {naive_growth:9.1f} MiB")
        known_ratio = known_wall / copy_wall
        print(f"embed / copy time ratio      {ratio:9.2f} x (standalone, every digest computed)")
        print(f"known / copy time ratio      {known_ratio:9.2f} x (target <= {TIME_TARGET:g} x)")
        print(f"embed / (copy + fsync) ratio {embed_wall / synced_wall:9.2f} x (for context)")
        print(f"naive / embed time ratio     {naive['wall'] / embed_wall:9.2f} x")
        time_ok = known_ratio <= TIME_TARGET
        rss_ok = embed_growth < RSS_TARGET_MIB
        print(
            f"{'PASS' if time_ok else 'FAIL'}: build-path embed time {known_ratio:.2f}x copyfile "
            f"(target <= {TIME_TARGET:g}x; standalone embed {ratio:.2f}x)"
        )
        print(
            f"{'PASS' if rss_ok else 'FAIL'}: embed peak RSS growth {embed_growth:.1f} MiB "
            f"(target < {RSS_TARGET_MIB:g} MiB)"
        )
        return 0 if time_ok and rss_ok else 1


if __name__ == "__main__":
    sys.exit(main())
