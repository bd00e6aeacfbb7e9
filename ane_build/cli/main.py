"""Command line: ``python -m ane_build {convert,inspect,verify,submit,...}`` and ``convert-to-ane``.

Parses arguments, calls the library, prints results. Exit codes: 0 success, 1 a failed operation
(one clear message, a traceback only with ``--verbose``), 2 usage errors. Nothing imports this.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import AneError

log = logging.getLogger("ane_build")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class _Progress:
    """A one-line byte progress meter on stderr, only when stderr is a terminal."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.enabled = sys.stderr.isatty()
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        if self.enabled and total > (64 << 20):
            pct = 100 * done // max(total, 1)
            sys.stderr.write(f"\r{self.label}: {done >> 20} / {total >> 20} MiB ({pct}%)")
            sys.stderr.flush()
            self.shown = True

    def finish(self) -> None:
        if self.shown:
            sys.stderr.write("\n")


def _positive(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0 (got {value})")
    return value


def _add_convert_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="source ONNX model")
    parser.add_argument("--bundle", type=Path, help="JSON bundle, or a folder with bundle.json")
    parser.add_argument("--microcode", type=Path, help="microcode file (*.tsk)")
    parser.add_argument("--tile-descriptors", type=Path, help="tile descriptor payload")
    parser.add_argument("--td-size", type=_positive, help="first descriptor size in bytes")
    parser.add_argument("--td-count", type=_positive, help="number of descriptors")
    parser.add_argument("--weights", type=Path, help="weights file")
    parser.add_argument("--anec", type=Path, help=".anec/.ane file from anecc")
    parser.add_argument(
        "--anec-payload-offset", type=_positive, default=0x1000, help="payload offset in .anec"
    )
    parser.add_argument("--artifact-root", type=Path, help="folder to discover artefacts in")
    parser.add_argument("--toolchain", help="compiler description recorded in the container")
    parser.add_argument("--output", "-o", type=Path, help="output path (default <model>_ane.onnx)")


def _cmd_convert(args: argparse.Namespace) -> int:
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
    )
    progress = _Progress(f"writing {args.output or args.model}")
    try:
        result = convert_model(
            args.model, spec, output=args.output, toolchain=args.toolchain, progress=progress
        )
    finally:
        progress.finish()
    for line in result.summary():
        print(line)
    return EXIT_OK


def _cmd_inspect(args: argparse.Namespace) -> int:
    from ..container import parse_ane_metadata

    meta = parse_ane_metadata(args.model)
    if args.json:
        print(meta.model_dump_json(indent=2))
        return EXIT_OK
    print(f"{args.model}")
    rows = [
        ("format", meta.format),
        ("toolchain", meta.toolchain or "-"),
        ("microcode", f"{meta.microcode_len} bytes, sha256 {meta.microcode_sha256 or '-'}"),
        ("weights", f"{meta.weights_len} bytes, sha256 {meta.weights_sha256 or '-'}"),
        ("tile descriptors", f"{meta.tile_descriptors_len} bytes"),
        ("td_size", f"{meta.td_size} (0x{meta.td_size:x})"),
        ("td_count", str(meta.td_count)),
        ("source sha256", meta.source_sha256 or "-"),
    ]
    for key, value in rows:
        print(f"  {key:<17}{value}")
    for slot, size in sorted(meta.tiles.items()):
        io = meta.io.get(slot)
        what = ""
        if io is not None:
            what = f"  {io.role} {io.name or ''} NCHW {io.n}x{io.c}x{io.h}x{io.w}"
            what += f" row {io.row_stride} plane {io.plane_stride}"
        print(f"  slot {slot:<12}{size} bytes{what}")
    return EXIT_OK


def _cmd_verify(args: argparse.Namespace) -> int:
    from ..container import verify_container

    report = verify_container(args.model)
    print(report.summary())
    return EXIT_OK if report.ok else EXIT_FAILED


def _cmd_submit(args: argparse.Namespace) -> int:
    from ..driver.device import open_device
    from ..run.program import submit_onnx_model

    with open_device(args.device) as device:
        result = submit_onnx_model(device, args.model, mode=args.mode)
    print(result.describe())
    return EXIT_OK


def _cmd_schema(args: argparse.Namespace) -> int:
    from ..build.config import schema_text

    sys.stdout.write(schema_text())
    return EXIT_OK


def _project_root(args: argparse.Namespace) -> Path:
    from ..build.layout import find_project_root

    return find_project_root(args.project or Path.cwd())


def _cmd_why(args: argparse.Namespace) -> int:
    from ..build.context import BuildContext
    from ..build.reasons import why

    ctx = BuildContext.load(_project_root(args))
    unknown = sorted(set(args.models) - set(ctx.models))
    if unknown:
        print(f"unknown model(s): {', '.join(unknown)}", file=sys.stderr)
        return EXIT_USAGE
    stale = 0
    for name, reasons in why(ctx, args.models or None).items():
        if not reasons:
            print(f"{name}: up to date")
        for reason in reasons:
            print(f"{name}: {reason}")
        stale += bool(reasons)
    print(f"{stale} of {len(ctx.models)} model(s) would be rebuilt or redeployed")
    return EXIT_OK


def _cmd_watch(args: argparse.Namespace) -> int:
    from ..build.runner import watch_project

    root = _project_root(args)
    if not args.verbose:
        # Say what triggered each build and how it went; the rest of the package stays quiet.
        logging.getLogger("ane_build.watch").setLevel(logging.INFO)
        logging.getLogger("ane_build.tasks").setLevel(logging.INFO)
    print(f"watching {root} (Ctrl-C to stop)", file=sys.stderr)
    watch_project(root, poll=args.poll, build_first=not args.no_initial_build)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m ane_build`` parser."""
    parser = argparse.ArgumentParser(prog="python -m ane_build", description=__doc__)
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logs and tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    convert = sub.add_parser("convert", help="embed compiler artefacts into <model>_ane.onnx")
    _add_convert_args(convert)
    convert.set_defaults(func=_cmd_convert)

    inspect = sub.add_parser("inspect", help="summarise a container's ane.* metadata")
    inspect.add_argument("model", type=Path)
    inspect.add_argument("--json", action="store_true", help="machine-readable output")
    inspect.set_defaults(func=_cmd_inspect)

    verify = sub.add_parser("verify", help="check a container against every kernel rule")
    verify.add_argument("model", type=Path)
    verify.set_defaults(func=_cmd_verify)

    submit = sub.add_parser("submit", help="submit a container to a device or the simulator")
    submit.add_argument("model", type=Path)
    submit.add_argument("--device", default="auto", help="auto, sim, sim:stock or a /dev path")
    submit.add_argument("--mode", choices=("onnx", "direct"), default="onnx")
    submit.set_defaults(func=_cmd_submit)

    why = sub.add_parser("why", help="say why models would be rebuilt (builds nothing)")
    why.add_argument("models", nargs="*", help="model names (default: all)")
    why.add_argument("--project", type=Path, help="project root (default: found from cwd)")
    why.set_defaults(func=_cmd_why)

    watch = sub.add_parser("watch", help="rebuild affected models whenever inputs change")
    watch.add_argument("--poll", action="store_true", help="poll (for network file systems)")
    watch.add_argument("--no-initial-build", action="store_true", help="do not build at start")
    watch.add_argument("--project", type=Path, help="project root (default: found from cwd)")
    watch.set_defaults(func=_cmd_watch)

    schema = sub.add_parser("schema", help="print the JSON schema of configs/*.toml")
    schema.set_defaults(func=_cmd_schema)
    return parser


def _run(func: Callable[[argparse.Namespace], int], args: argparse.Namespace, prog: str) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s: %(message)s",
    )
    try:
        return func(args)
    except AneError as exc:
        if args.verbose:
            traceback.print_exc(file=sys.stderr)
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m ane_build`` and the ``ane-build`` script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return _run(args.func, args, f"ane_build {args.command}")


def convert_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``convert-to-ane`` (and ``tools/convert_to_ane.py``)."""
    parser = argparse.ArgumentParser(
        prog="convert-to-ane",
        description="Embed ANE compiler artefacts into an ONNX model as ane.* metadata.",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logs and tracebacks")
    _add_convert_args(parser)
    args = parser.parse_args(argv)
    return _run(_cmd_convert, args, "convert-to-ane")
