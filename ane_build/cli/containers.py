"""Commands on one container: ``convert``, ``inspect``, ``verify`` and ``submit``.

Each handler parses nothing itself: it gets argparse's namespace, calls the library, prints.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .common import EXIT_FAILED, EXIT_OK, Progress, device, payload_name, positive


def add_convert_args(parser: argparse.ArgumentParser) -> None:
    """The converter's arguments (shared by ``convert`` and ``convert-to-ane``)."""
    parser.add_argument("model", type=Path, help="source ONNX model")
    parser.add_argument("--bundle", type=Path, help="JSON bundle, or a folder with bundle.json")
    parser.add_argument("--microcode", type=Path, help="microcode file (*.tsk)")
    parser.add_argument("--tile-descriptors", type=Path, help="tile descriptor payload")
    parser.add_argument("--td-size", type=positive, help="first descriptor size in bytes")
    parser.add_argument("--td-count", type=positive, help="number of descriptors")
    parser.add_argument("--weights", type=Path, help="weights file")
    parser.add_argument("--anec", type=Path, help=".anec/.ane file from anecc")
    parser.add_argument(
        "--anec-payload-offset", type=positive, default=0x1000, help="payload offset in .anec"
    )
    parser.add_argument("--artifact-root", type=Path, help="folder to discover artefacts in")
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        type=payload_name,
        metavar="NAME",
        help="let the --microcode/--weights/--tile-descriptors file replace the .anec's or "
        "the bundle's own payload (repeatable; NAME is microcode, weights or tile_descriptors)",
    )
    parser.add_argument(
        "--skip-validation",
        action="store_true",
        help="do not check the descriptor chain against td_size/td_count (for chains this tool "
        "does not understand; the kernel's own rules still apply)",
    )
    parser.add_argument("--toolchain", help="compiler description recorded in the container")
    parser.add_argument("--output", "-o", type=Path, help="output path (default <model>_ane.onnx)")


def cmd_convert(args: argparse.Namespace) -> int:
    """``convert``: resolve the artefacts and write the container."""
    from ..artifacts import ArtifactSpec
    from ..convert import convert_model

    spec = ArtifactSpec(
        root=args.artifact_root,
        anec=args.anec,
        bundle=args.bundle,
        microcode=args.microcode,
        tile_descriptors=args.tile_descriptors,
        weights=args.weights,
        td_size=args.td_size,
        td_count=args.td_count,
        anec_payload_offset=args.anec_payload_offset,
        overrides=tuple(dict.fromkeys(args.override)),
        skip_validation=args.skip_validation,
    )
    progress = Progress(f"writing {args.output or args.model}")
    try:
        result = convert_model(
            args.model, spec, output=args.output, toolchain=args.toolchain, progress=progress
        )
    finally:
        progress.finish()
    for line in result.summary():
        print(line)
    return EXIT_OK


def _inspect_rows(meta: Any) -> list[tuple[str, str]]:
    return [
        ("format", meta.format or "-"),
        ("toolchain", meta.toolchain or "-"),
        ("microcode", f"{meta.microcode_len} bytes, sha256 {meta.microcode_sha256 or '-'}"),
        ("weights", f"{meta.weights_len} bytes, sha256 {meta.weights_sha256 or '-'}"),
        ("tile descriptors", f"{meta.tile_descriptors_len} bytes"),
        ("td_size", f"{meta.td_size} (0x{meta.td_size:x})"),
        ("td_count", str(meta.td_count)),
        ("source sha256", meta.source_sha256 or "-"),
    ]


def cmd_inspect(args: argparse.Namespace) -> int:
    """``inspect``: a container's metadata (payloads not decoded), or an ``.anec`` file's header."""
    from ..container import parse_ane_metadata
    from ..run.model import ANEC_SUFFIXES

    if args.model.suffix.lower() in ANEC_SUFFIXES:
        from .inspect_anec import cmd_inspect_anec

        return cmd_inspect_anec(args)

    meta = parse_ane_metadata(args.model)
    if args.json:
        print(meta.model_dump_json(indent=2))
        return EXIT_OK
    print(f"{args.model}")
    for key, value in _inspect_rows(meta):
        print(f"  {key:<17}{value}")
    for slot, size in sorted(meta.tiles.items()):
        io = meta.io.get(slot)
        what = ""
        if io is not None:
            what = f"  {io.role} {io.name or ''} NCHW {io.n}x{io.c}x{io.h}x{io.w}"
            what += f" row {io.row_stride} plane {io.plane_stride}"
        print(f"  slot {slot:<12}{size} bytes{what}")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    """``verify``: the kernel's verdict, our rules, portability; exit 1 when a check fails."""
    from ..container import verify_container

    progress = Progress(f"verifying {args.model}")
    try:
        report = verify_container(args.model, portable=args.strict, progress=progress)
    finally:
        progress.finish()
    print(report.summary())
    return EXIT_OK if report.ok else EXIT_FAILED


def cmd_submit(args: argparse.Namespace) -> int:
    """``submit``: one submit on a device or the simulator."""
    from ..driver.device import open_device
    from ..run import submit_onnx_model

    with open_device(args.device) as dev:
        result = submit_onnx_model(dev, args.model, mode=args.mode)
    print(result.describe())
    return EXIT_OK


def add_parsers(sub: Any) -> None:
    """Register the container commands on ``sub`` (an argparse subparsers object)."""
    convert = sub.add_parser("convert", help="embed compiler artefacts into <model>_ane.onnx")
    add_convert_args(convert)
    convert.set_defaults(func=cmd_convert)

    inspect = sub.add_parser(
        "inspect", help="summarise a container's ane.* metadata or an .anec file's header"
    )
    inspect.add_argument("model", type=Path, help="an _ane.onnx container or an .anec/.ane file")
    inspect.add_argument("--json", action="store_true", help="machine-readable output")
    inspect.add_argument(
        "--payload-offset",
        type=positive,
        help="where an .anec file's payload starts (default 0x1000, as anecc writes; 0x800 for "
        "files made for an older library)",
    )
    inspect.set_defaults(func=cmd_inspect)

    verify = sub.add_parser("verify", help="check a container against every kernel rule")
    verify.add_argument("model", type=Path)
    verify.add_argument(
        "--strict",
        action="store_true",
        help="fail, not warn, on what the kernel accepts but other readers refuse",
    )
    verify.set_defaults(func=cmd_verify)

    submit = sub.add_parser("submit", help="submit a container to a device or the simulator")
    submit.add_argument("model", type=Path)
    submit.add_argument(
        "--device", type=device, default="auto", help="auto, sim, sim:stock or a /dev path"
    )
    submit.add_argument("--mode", choices=("onnx", "direct"), default="onnx")
    submit.set_defaults(func=cmd_submit)
