"""``ane-build`` / ``python -m ane_build`` and ``convert-to-ane``: parse, dispatch, report.

Exit codes: 0 success, 1 a failed operation or a failed check (one clear message; a traceback
only with ``--verbose``), 2 usage errors, 3 inputs, test data or tolerances that do not fit the
model, 130 interrupted (Ctrl-C, one line). Nothing imports this layer.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Callable, Sequence

from ..errors import AneError, InputError
from . import containers, junit, llm, project, running
from .common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m ane_build`` parser."""
    parser = argparse.ArgumentParser(prog="ane-build", description=__doc__)
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logs and tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    containers.add_parsers(sub)
    running.add_parsers(sub)
    project.add_parsers(sub)
    junit.add_parsers(sub)
    llm.add_parsers(sub)
    return parser


def run(func: Callable[[argparse.Namespace], int], args: argparse.Namespace, prog: str) -> int:
    """Run a command handler with the command line's error rules; return the exit code."""
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s: %(message)s",
    )
    try:
        return func(args)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except InputError as exc:
        _report(prog, f"bad input: {exc}", args.verbose)
        return EXIT_BAD_INPUT
    except AneError as exc:
        _report(prog, f"error: {exc}", args.verbose)
    # Anything else is a bug in ane_build; still one line unless asked for the traceback.
    except Exception as exc:
        hint = "" if args.verbose else " (run with --verbose for the traceback; please report it)"
        _report(prog, f"internal error: {type(exc).__name__}: {exc}{hint}", args.verbose)
    return EXIT_FAILED


def _report(prog: str, message: str, verbose: bool) -> None:
    if verbose:
        traceback.print_exc(file=sys.stderr)
    print(f"{prog}: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m ane_build`` and the ``ane-build`` script."""
    args = build_parser().parse_args(argv)
    return run(args.func, args, f"ane-build {args.command}")


def convert_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``convert-to-ane`` (and ``tools/convert_to_ane.py``)."""
    parser = argparse.ArgumentParser(
        prog="convert-to-ane",
        description="Embed ANE compiler artefacts into an ONNX model as ane.* metadata.",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logs and tracebacks")
    containers.add_convert_args(parser)
    args = parser.parse_args(argv)
    return run(containers.cmd_convert, args, "convert-to-ane")
