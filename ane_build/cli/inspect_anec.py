"""``inspect FILE.anec``: every header field, the tensor slots, the tiles and the descriptor chain.

Reads the file through `formats.anec` (header checks included) and walks the chain itself, so a
broken chain is shown next to the header that states it rather than hiding it. Prints only.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .common import EXIT_FAILED, EXIT_OK


def anec_summary(path: Path, payload_offset: int | None = None) -> dict[str, Any]:
    """What ``inspect`` shows of an ``.anec`` file, as JSON-safe data.

    Keys: ``path``, ``payload_offset``, ``header`` (every field; ``tiles`` and ``nchw`` as lists
    of 32), ``slots`` (every tensor slot: role, name, N C H W, strides, its tile in bytes),
    ``tiles`` (slot -> bytes, non-zero only), ``chain`` (each descriptor's offset, size, task
    and network id, and whether it ends the network) or ``chain_error``.

    Raises:
        AnecFormatError: The header disagrees with itself or with the file.
        ArtifactError: The file cannot be read.
    """
    from ..errors import DescriptorChainError
    from ..formats.anec import ANEC_PAYLOAD_OFFSET, read_anec
    from ..formats.microcode import check_chain, walk_chain

    payload_offset = ANEC_PAYLOAD_OFFSET if payload_offset is None else payload_offset
    anec = read_anec(path, payload_offset=payload_offset, check_chain=False)
    header = asdict(anec.header)
    header["tiles"] = list(anec.header.tiles)
    header["nchw"] = [list(row) for row in anec.header.nchw]
    slots = [
        {"slot": slot, **io.model_dump(), "tile_bytes": anec.tiles.get(slot, 0)}
        for slot, io in sorted(anec.io.items())
    ]
    summary: dict[str, Any] = {
        "path": str(path),
        "payload_offset": payload_offset,
        "header": header,
        "slots": slots,
        "tiles": {str(slot): size for slot, size in sorted(anec.tiles.items())},
        "chain": None,
        "chain_error": None,
    }
    microcode = anec.microcode.read()
    try:
        chain = walk_chain(microcode, anec.td_size, source=f"{path} (header td_size)")
        check_chain(chain, td_count=anec.td_count, tsk_size=anec.header.tsk_size, source=str(path))
    except DescriptorChainError as exc:
        summary["chain_error"] = str(exc)
        return summary
    summary["chain"] = [asdict(descriptor) for descriptor in chain.descriptors]
    return summary


_HEADER_FIELDS = ("size", "td_size", "td_count", "tsk_size", "krn_size", "src_count", "dst_count")


def _print(summary: dict[str, Any]) -> None:
    header = summary["header"]
    print(f"{summary['path']} (.anec, payload at 0x{summary['payload_offset']:x})")
    print("header:")
    for name in _HEADER_FIELDS:
        print(f"  {name:<10}{header[name]} (0x{header[name]:x})")
    print("slots:")
    for s in summary["slots"]:
        name = s["name"] or "-"
        print(
            f"  {s['slot']:>2} {s['role']:<7}{name:<10}NCHW {s['n']}x{s['c']}x{s['h']}x{s['w']}  "
            f"row stride {s['row_stride']}  plane stride {s['plane_stride']}  "
            f"tile {s['tile_bytes']} bytes"
        )
    tiles = ", ".join(
        f"[{slot}] {header['tiles'][int(slot)]} ({size} bytes)"
        for slot, size in summary["tiles"].items()
    )
    print(f"tiles (16 KiB pages): {tiles}")
    if summary["chain_error"] is not None:
        print(f"descriptor chain: BROKEN: {summary['chain_error']}")
        return
    print(f"descriptor chain: {len(summary['chain'])} descriptor(s)")
    for d in summary["chain"]:
        end = "  end of network" if d["last"] else ""
        print(
            f"  offset 0x{d['offset']:05x}  size 0x{d['size']:x} ({d['size']})  "
            f"task {d['task_id']}  network {d['network_id']}{end}"
        )


def cmd_inspect_anec(args: argparse.Namespace) -> int:
    """``inspect`` of an ``.anec``/``.ane`` file; exit 1 when its descriptor chain is broken."""
    summary = anec_summary(args.model, args.payload_offset)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        _print(summary)
    return EXIT_OK if summary["chain_error"] is None else EXIT_FAILED
